"""Vision: what one frame says about the face and the eyes. Pure (values in, values out): no
trio, no sockets, no sources.

- :mod:`~trackerd.vision.tracker`: the face track (:class:`~trackerd.vision.tracker.Tracker`),
  with :mod:`~trackerd.vision.eyes` for each eye;
- :mod:`~trackerd.vision.cascades`, :mod:`~trackerd.vision.images`,
  :mod:`~trackerd.vision.geometry`: OpenCV's detectors, image decoding, boxes;
- :mod:`~trackerd.vision.observation`: what a frame's analysis returns, and
  :class:`~trackerd.vision.observation.FrameAnalyzer`, what the server needs of a tracker;
- :mod:`~trackerd.vision.stillness`: how still a face is between frames.

It imports only :mod:`kernels`, :mod:`trackerd.errors` and itself. Nothing is re-exported here:
importing the package must not load OpenCV and numba (see :mod:`trackerd`).
"""
