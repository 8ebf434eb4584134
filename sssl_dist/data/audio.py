"""Audio front end shared by the shard stage and `sssl predict`: decode, check, log-mel.

Decoding goes through soundfile (libsndfile 1.1+: wav, flac, ogg, mp3), down-mixes to mono and
resamples to 22.05 kHz with librosa's soxr resampler (what `librosa.load` does, minus its
deprecated audioread fallback, and with our own checks before the resampler sees NaNs).
Every way a file can be unusable raises `AudioError` with a one-line reason, so callers can
skip the file and say why.
"""

from __future__ import annotations

import stat
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from sssl_dist.config import FeatureConfig


class AudioError(ValueError):
    """A file that cannot be used, with a one-line reason."""


# Decoded PCM lies in [-1, 1]; float files may overshoot a little. A peak above this is not
# sound but garbage (a x1e18 file squares to inf inside the STFT and its mel becomes NaN).
MAX_PEAK = 1e3
# The range a log-mel of accepted audio can take: the floor is amin = 1e-10 (-100 dB); a full
# square wave at MAX_PEAK reaches about 95 dB. Anything outside means the features are broken.
MEL_DB_RANGE = (-100.5, 120.0)


def probe_duration(path: str | Path) -> float | None:
    """Duration in seconds from the header, without decoding; None if the header is unreadable."""
    try:
        return float(sf.info(str(path)).duration)
    except Exception:  # noqa: BLE001 - any header failure just means "unknown"
        return None


def decode(path: str | Path, fc: FeatureConfig, *, enforce_limits: bool = True) -> np.ndarray:
    """Decode any supported file to mono float32 at fc.sample_rate, or raise AudioError.

    With enforce_limits (the shard stage) files shorter than fc.min_duration_s or longer than
    fc.max_duration_s are refused; `sssl predict` passes False and accepts any length.
    """
    path = Path(path)
    unusable = not_a_regular_file(path)
    if unusable:
        raise AudioError(unusable)
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    header = probe_duration(path)
    if enforce_limits and header is not None and header > fc.max_duration_s:
        raise AudioError(f"too long ({header:.0f} s > max_duration_s {fc.max_duration_s:.0f} s)")
    try:
        data, native_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types; all mean unreadable
        raise AudioError(_undecodable_reason(path, exc)) from None
    check_samples(data)
    y = data.mean(axis=1)  # down-mix to mono
    if native_sr != fc.sample_rate and y.size:
        y = librosa.resample(y, orig_sr=native_sr, target_sr=fc.sample_rate, res_type="soxr_hq")
    check_signal(y, fc, enforce_limits=enforce_limits)
    return y.astype(np.float32, copy=False)


def not_a_regular_file(path: str | Path) -> str | None:
    """What a path is when it is not a regular file ("a folder", "a named pipe (FIFO)", ...),
    or None for a regular file. Asked before anything opens the path: opening a FIFO blocks
    until something writes to it, and "file not found" would be wrong for all but a missing
    path."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if path.is_symlink() else "file not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kind = next((name for test, name in kinds if test(mode)), None)
    return f"{kind}, not an audio file" if kind else "not a regular file"


# Leading bytes of the containers libsndfile reads (MP3 may also start with a frame sync).
_MAGIC = ((b"RIFF", "WAV"), (b"RF64", "WAV"), (b"fLaC", "FLAC"), (b"OggS", "Ogg"), (b"ID3", "MP3"))
_MAGIC += ((b"FORM", "AIFF"), (b"caff", "CAF"))


def sniff_format(path: str | Path) -> str | None:
    """The container a file's first bytes announce ("WAV", "MP3", ...), "text" for a text
    file, or None when nothing recognisable is there."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG audio frame sync
        return "MP3"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text" if text and "\x00" not in text else None


def _undecodable_reason(path: Path, exc: Exception) -> str:
    """Why libsndfile could not read a file, in words that fit the file. libsndfile answers
    "File does not exist or is not a regular file" for any MP3-named file it cannot parse,
    which is wrong when the file exists: say what the file actually is instead."""
    try:
        kind = sniff_format(path)
    except OSError as err:  # unreadable (permissions): a reason too, never a crash
        return f"cannot be read ({err.strerror or err})"
    if kind == "text":
        return "a text file, not audio"
    if kind is None:
        return "not a recognised audio format (no WAV, FLAC, Ogg, MP3 or AIFF header)"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    detail = first.split(": ")[-1][:120]
    if "does not exist" in detail:
        return f"corrupt or truncated {kind} data"
    return f"corrupt or truncated {kind} data ({detail})"


def check_samples(data: np.ndarray) -> None:
    """Reject samples the resampler and the STFT would turn into NaN: non-finite or absurdly
    large values (before any arithmetic on them)."""
    if not data.size:
        return
    if not np.all(np.isfinite(data)):
        raise AudioError(f"contains {int(np.sum(~np.isfinite(data)))} NaN/inf samples")
    peak = float(np.max(np.abs(data)))
    if peak > MAX_PEAK:
        raise AudioError(f"absurd amplitude (peak {peak:.3g} > {MAX_PEAK:g}; PCM lies in [-1, 1])")


def check_signal(y: np.ndarray, fc: FeatureConfig, *, enforce_limits: bool = True) -> None:
    """Reject decoded audio that would poison training: empty, non-finite, silent, too short."""
    if y.size == 0:
        raise AudioError("no audio samples")
    if not np.all(np.isfinite(y)):
        raise AudioError(f"contains {int(np.sum(~np.isfinite(y)))} NaN/inf samples")
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    dbfs = 20 * np.log10(max(rms, 1e-12))
    if dbfs < fc.silence_dbfs:
        raise AudioError(f"silent (RMS {dbfs:.0f} dBFS < {fc.silence_dbfs:.0f} dBFS)")
    seconds = y.size / fc.sample_rate
    if enforce_limits and seconds < fc.min_duration_s:
        raise AudioError(f"too short ({seconds:.1f} s < min_duration_s {fc.min_duration_s:.0f} s)")
    if enforce_limits and seconds > fc.max_duration_s:
        raise AudioError(f"too long ({seconds:.0f} s > max_duration_s {fc.max_duration_s:.0f} s)")


def log_mel(y: np.ndarray, fc: FeatureConfig) -> np.ndarray:
    """Log-mel spectrogram [n_mels, frames] in dB (paper §3.1), computed once per song.

    The reference is fixed (1.0), not the song's maximum: loudness is an arousal cue, and a
    per-song reference would erase it. Raises AudioError when the result is unusable
    (`check_mel`), so the shard stage and `sssl predict` both refuse such a file.
    """
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=fc.sample_rate,
        n_fft=fc.n_fft,
        hop_length=fc.hop_length,
        n_mels=fc.n_mels,
        window="hann",
        power=2.0,
    )
    db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).astype(np.float32)
    check_mel(db)
    return db


def check_mel(mel: np.ndarray) -> None:
    """Reject a log-mel that would poison training: one NaN segment makes every weight NaN in
    one step, so the file is refused here, with its reason, and never becomes a number."""
    bad = int(np.sum(~np.isfinite(mel)))
    if bad:
        raise AudioError(f"log-mel has {bad} NaN/inf value(s)")
    lo, hi = float(mel.min(initial=0.0)), float(mel.max(initial=0.0))
    if lo < MEL_DB_RANGE[0] or hi > MEL_DB_RANGE[1]:
        raise AudioError(
            f"log-mel out of range ({lo:.0f}..{hi:.0f} dB, expected within "
            f"{MEL_DB_RANGE[0]:.0f}..{MEL_DB_RANGE[1]:.0f} dB)"
        )
