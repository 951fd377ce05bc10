"""The bundled demo clip shows the whole signal: with the real tracker, a face, then the person
leaves (``looking_away`` turns true) and a person comes back (false again), within a minute.
See trackerd/data/SOURCE.txt for how it was cut and from what."""

from __future__ import annotations

from trackerd.sources import demo_clip_path, open_source
from trackerd.vision.tracker import Tracker

PEXELS_S = 19.7
"""The first part: the Pexels clip, a face in every frame."""
LEAVES_S = PEXELS_S + 72 / 26.4
"""face_noface.mov's person is gone from its frame 72 (~26.4 fps) on."""
BACK_S = PEXELS_S + 169 / 26.4 + 96 / 26.5
"""noface_face.mov's face appears at its frame 96 (~26.5 fps)."""


def test_the_demo_clip_goes_away_and_comes_back_with_the_real_tracker() -> None:
    tracker = Tracker()
    seen: list[tuple[float, bool, bool]] = []
    with open_source(str(demo_clip_path())) as source:
        for frame in source:
            observation = tracker.process(frame.image, frame.t)
            seen.append((frame.t, observation.face_detected, observation.looking_away))
    duration = seen[-1][0]
    assert 25.0 < duration < 60.0, "one loop, well within a minute"

    first = [face for t, face, _ in seen if t < PEXELS_S]
    assert sum(first) >= 0.95 * len(first), "a face through the first part"
    assert not any(away for t, _, away in seen if 1.0 < t < LEAVES_S), "present until they leave"

    away = [t for t, _, is_away in seen if is_away and t > PEXELS_S]
    assert away, "looking_away never turned true"
    turned_away = away[0]
    assert LEAVES_S < turned_away < LEAVES_S + 1.5, f"away at {turned_away:.2f} s"
    assert all(is_away for t, _, is_away in seen if turned_away <= t < BACK_S), "stays away"

    back = [t for t, _, is_away in seen if not is_away and t > turned_away]
    assert back, "looking_away never turned false again"
    assert BACK_S < back[0] < BACK_S + 1.5, f"back at {back[0]:.2f} s"
    print(f"\ndemo clip, {duration:.1f} s: away at {turned_away:.2f} s, back at {back[0]:.2f} s")
