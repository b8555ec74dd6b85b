"""Media-shaped synthetic traffic: ``ciris-av publish``, the integration scenarios and the benchmarks.

A video track at ~30 fps with a large keyframe opening every group of pictures and smaller deltas,
and an audio track of ~100-byte frames at 50 fps (Opus at 20 ms). Times are offsets in seconds
from the start of the stream; callers pace against their own clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.media_wire import KIND_AUDIO, KIND_VIDEO, ForwardingHeader

VIDEO_TRACK = 1
AUDIO_TRACK = 0


@dataclass(frozen=True, slots=True)
class Shape:
    video_fps: float = 30.0
    gop: int = 30
    keyframe_bytes: int = 8000
    delta_bytes: int = 2000
    audio_fps: float = 50.0
    audio_bytes: int = 100

    def bytes_per_s(self) -> float:
        video = (self.keyframe_bytes + (self.gop - 1) * self.delta_bytes) / self.gop * self.video_fps
        return video + self.audio_bytes * self.audio_fps


# The integration shape: ~8 kB keyframes every 30 frames, ~2 kB deltas, 100 B audio.
TEST_SHAPE = Shape()


def shape_for_rate(bits_per_s: float, keyframe_ratio: float = 4.0) -> Shape:
    """The test shape scaled so payload bytes total ``bits_per_s`` (keyframe = ratio x delta)."""
    base = Shape()
    video_bytes_per_s = bits_per_s / 8 - base.audio_bytes * base.audio_fps
    per_gop = video_bytes_per_s * base.gop / base.video_fps
    delta = int(per_gop / (keyframe_ratio + base.gop - 1))
    return Shape(keyframe_bytes=int(delta * keyframe_ratio), delta_bytes=delta)


@dataclass(frozen=True, slots=True)
class FramePlan:
    due_s: float
    track_id: int
    kind: int
    seq: int
    gop_id: int
    keyframe: bool
    size: int

    def header(self, stream_id: int, capture_ts_us: int) -> ForwardingHeader:
        return ForwardingHeader(
            stream_id=stream_id,
            track_id=self.track_id,
            kind=self.kind,
            frame_seq=self.seq,
            gop_id=self.gop_id,
            capture_ts_us=capture_ts_us,
            keyframe=self.keyframe,
            priority=0 if self.kind == KIND_AUDIO else (64 if self.keyframe else 128),
        )


def schedule(shape: Shape, duration_s: float, video_frames: int | None = None) -> list[FramePlan]:
    """Frames due in ``[0, duration_s)`` (or until ``video_frames`` video frames), in due order."""
    plans: list[FramePlan] = []
    n_video = video_frames if video_frames is not None else int(duration_s * shape.video_fps)
    end = n_video / shape.video_fps
    for seq in range(n_video):
        key = seq % shape.gop == 0
        plans.append(
            FramePlan(seq / shape.video_fps, VIDEO_TRACK, KIND_VIDEO, seq, seq // shape.gop, key,
                      shape.keyframe_bytes if key else shape.delta_bytes)
        )
    for seq in range(int(end * shape.audio_fps)):
        plans.append(FramePlan(seq / shape.audio_fps, AUDIO_TRACK, KIND_AUDIO, seq, 0, False, shape.audio_bytes))
    plans.sort(key=lambda p: (p.due_s, p.track_id))
    return plans
