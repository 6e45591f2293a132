"""Korean text and a 0–1 fraction for one image job's progress, for progress bars."""

from __future__ import annotations

import math

from adgen.type.v1 import progress_pb2

_S = progress_pb2

# Where each stage sits on the bar; denoising fills the span between its start and decoding.
_FRACTION_AT_STAGE: dict[progress_pb2.ProgressStage.ValueType, float] = {
    _S.PROGRESS_STAGE_UNSPECIFIED: 0.0,
    _S.PROGRESS_STAGE_QUEUED: 0.0,
    _S.PROGRESS_STAGE_UNLOADING: 0.03,
    _S.PROGRESS_STAGE_LOADING: 0.06,
    _S.PROGRESS_STAGE_DENOISING: 0.1,
    _S.PROGRESS_STAGE_DECODING: 0.95,
    _S.PROGRESS_STAGE_DONE: 1.0,
}


def progress_fraction(progress: progress_pb2.Progress) -> float:
    """How far the job is, from 0 to 1."""
    start = _FRACTION_AT_STAGE.get(progress.stage, 0.0)
    if progress.stage == _S.PROGRESS_STAGE_DENOISING and progress.total_steps > 0:
        done = min(max(progress.step, 0), progress.total_steps) / progress.total_steps
        return start + (_FRACTION_AT_STAGE[_S.PROGRESS_STAGE_DECODING] - start) * done
    return start


def progress_text(progress: progress_pb2.Progress) -> str:
    """What the job is doing, in Korean (queue position and wait, model loading, denoising step)."""
    stage = progress.stage
    if stage == _S.PROGRESS_STAGE_QUEUED:
        return _queued_text(progress)
    if stage == _S.PROGRESS_STAGE_UNLOADING:
        return "이전 모델을 내리는 중이에요"
    if stage == _S.PROGRESS_STAGE_LOADING:
        return "이미지 모델을 불러오는 중이에요"
    if stage == _S.PROGRESS_STAGE_DENOISING:
        return f"그리는 중이에요 ({progress.step}/{progress.total_steps} 단계)"
    if stage == _S.PROGRESS_STAGE_DECODING:
        return "마무리하는 중이에요"
    if stage == _S.PROGRESS_STAGE_DONE:
        return "완성!"
    return "준비 중이에요"


def _queued_text(progress: progress_pb2.Progress) -> str:
    ahead = "곧 시작해요" if progress.queue_position <= 0 else f"앞에 {progress.queue_position}건이 있어요"
    eta_s = progress.eta.ToTimedelta().total_seconds() if progress.HasField("eta") else 0.0
    wait = f" · 약 {math.ceil(eta_s)}초 남음" if eta_s > 0 else ""
    return f"대기 중 · {ahead}{wait}"
