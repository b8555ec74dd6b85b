"""Media-shaped traffic: moved into the package as :mod:`ciris_av_plugin.media.shape` (``ciris-av
publish`` uses it); re-exported here for the scenarios and benchmarks that import it from here."""

from ciris_av_plugin.media.shape import (
    AUDIO_TRACK,
    TEST_SHAPE,
    VIDEO_TRACK,
    FramePlan,
    Shape,
    schedule,
    shape_for_rate,
)

__all__ = ["AUDIO_TRACK", "TEST_SHAPE", "VIDEO_TRACK", "FramePlan", "Shape", "schedule", "shape_for_rate"]
