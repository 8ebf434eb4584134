"""A seeded generator of music clips whose emotion changes over time, with per-second truth.

Written in the 4Q layout (MER_audio_taffc_dataset/Q*/<id>.mp3 + panda_dataset_taffc_annotations.csv)
so the 4Q loader reads it, plus `ground_truth_per_second.csv` (Song, Second, Quadrant), and
continuous valence and arousal truth in the manifest loader's layout (on [-1, 1], midpoint 0):
`va_manifest.csv` (id, path, valence, arousal: a static value per song) and
`va_per_second.csv` (id, time, valence, arousal: one row per second), described by
`va_truth.json`.

Russell-quadrant cues follow the music-psychology literature the paper cites (Bigand et al.
2005; Gabrielsson & Lindström's summary of structural cues):
- arousal: tempo, note density, loudness, brightness (harmonic roll-off), percussion;
- valence: mode (major/minor), consonance vs dissonance, register.
Each song draws a cue strength: weak songs sit near the quadrant boundaries, so no single cue
and no single song is a give-away. Key, timbre, gain, noise and tempo are jittered per song.

The continuous truth is the value the cues are driven by: a second's valence is the song's cue
strength times its quadrant's valence sign (the `s * vs` every valence cue scales with), and
likewise for arousal. The per-section random draws around it (mode, density, loudness) are
how the music expresses that value, not a change of it.

Each song has a dominant quadrant (its clip label) and excursions of 2-8 s into other
quadrants, placed until the song's share of off-label seconds (default 30 %, spread per song)
is used up: 1-7 excursions, median 2, and 1-4 for 95 % of songs (2,000 songs counted).
"""

from __future__ import annotations

import csv
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

# Per-quadrant (valence sign, arousal sign): Q1 happy, Q2 tense/angry, Q3 sad, Q4 calm.
VA_SIGN = {0: (1, 1), 1: (-1, 1), 2: (-1, -1), 3: (1, -1)}
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
# Each song's share of off-label seconds is drawn around the configured one and clipped to this
# range (quadrant_timeline): below it no excursion fits, above it the clip label could lose
# its majority. A configured share outside it would be recorded but not made.
EXCURSION_RANGE = (0.05, 0.45)
# The continuous truth's scale: sign times a cue strength in (0, 1], so 0 is the midpoint
# between the quadrants and the scale is that of EiM's and DEAM's dynamic ratings.
VA_SCALE = (-1.0, 1.0)
VA_MIDPOINT = 0.0
VA_MANIFEST_CSV = "va_manifest.csv"
VA_PER_SECOND_CSV = "va_per_second.csv"
VA_TRUTH_JSON = "va_truth.json"


@dataclass(frozen=True)
class SynthConfig:
    n_songs: int = 120  # small default: the main job runs in minutes on 2 cores
    seed: int = 0
    min_duration_s: float = 20.0  # durations vary, as real clips do: 20-45 s, no padding
    max_duration_s: float = 45.0
    excursion_fraction: float = 0.30  # target share of seconds off the clip label (25-35 %)
    min_excursion_s: int = 2
    max_excursion_s: int = 8
    sample_rates: tuple[int, ...] = (16000, 22050, 44100, 48000)  # exercise resampling
    stereo_probability: float = 0.5  # exercise down-mixing
    cue_strength: tuple[float, float] = (0.35, 1.0)  # per-song range; low = ambiguous song
    noise_db: tuple[float, float] = (-40.0, -22.0)  # background noise level range, dBFS
    # A mix of containers exercises every decoder; mp3 (the real 4Q format) is the slowest to
    # encode (0.5 s a song here against 0.03 s for flac), so it is a quarter of the corpus.
    formats: tuple[tuple[str, float], ...] = (
        ("mp3", 0.25),
        ("flac", 0.55),
        ("ogg", 0.1),
        ("wav", 0.1),
    )

    def __post_init__(self) -> None:
        if not _whole(self.n_songs) or self.n_songs < 1:
            raise ValueError(f"n_songs (--songs) must be a whole number >= 1, got {self.n_songs!r}")
        if not _whole(self.seed) or self.seed < 0:
            raise ValueError(f"seed (--seed) must be a whole number >= 0, got {self.seed!r}")
        lo, hi = EXCURSION_RANGE
        if not lo <= self.excursion_fraction <= hi:
            raise ValueError(
                f"excursion_fraction (--excursion) is a share of seconds in [{lo}, {hi}], got "
                f"{self.excursion_fraction}: each song's share is clipped to that range, and "
                "the clip label must stay the majority of its seconds"
            )
        if not 0 < self.min_duration_s <= self.max_duration_s:
            raise ValueError(
                f"durations must satisfy 0 < min_duration_s <= max_duration_s, got "
                f"{self.min_duration_s} and {self.max_duration_s}"
            )
        if not 1 <= self.min_excursion_s <= self.max_excursion_s:
            raise ValueError(
                f"excursions must satisfy 1 <= min_excursion_s <= max_excursion_s, got "
                f"{self.min_excursion_s} and {self.max_excursion_s}"
            )
        lo_s, hi_s = self.cue_strength
        if not 0 < lo_s <= hi_s <= 1:
            # The continuous truth is strength times a sign: on [-1, 1], never at its midpoint.
            raise ValueError(
                f"cue_strength must satisfy 0 < low <= high <= 1, got {self.cue_strength}"
            )
        if not 0 <= self.stereo_probability <= 1:
            raise ValueError(f"stereo_probability must be in [0, 1], got {self.stereo_probability}")
        if not self.sample_rates or min(self.sample_rates) < 1:
            raise ValueError(f"sample_rates must be positive, got {self.sample_rates}")
        if not self.formats or min(w for _, w in self.formats) <= 0:
            raise ValueError(f"formats need positive weights, got {self.formats}")


def _whole(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def quadrant_timeline(rng: np.random.Generator, n_seconds: int, cfg: SynthConfig):
    """(dominant quadrant, per-second quadrants [n_seconds]) with its excursions.

    Excursions of min..max_excursion_s seconds are placed at random, not overlapping, until the
    song's share of off-label seconds reaches its budget: the configured fraction with some
    song-to-song spread, never more than 45 % (the clip label must stay the majority).
    """
    dominant = int(rng.integers(4))
    timeline = np.full(n_seconds, dominant)
    share = np.clip(rng.normal(cfg.excursion_fraction, 0.06), *EXCURSION_RANGE)
    budget = int(round(n_seconds * share))
    for _ in range(40):  # placement attempts; overlapping draws are retried, never merged
        if budget < cfg.min_excursion_s:
            break
        length = int(rng.integers(cfg.min_excursion_s, min(cfg.max_excursion_s, budget) + 1))
        start = int(rng.integers(0, n_seconds - length + 1))
        lo, hi = max(0, start - 1), min(n_seconds, start + length + 1)  # keep a gap between
        if np.any(timeline[lo:hi] != dominant):
            continue
        timeline[start : start + length] = rng.choice([q for q in range(4) if q != dominant])
        budget -= length
    return dominant, timeline


def _note(f0: float, dur: float, sr: int, rolloff: float, amp: float, attack: float) -> np.ndarray:
    """Additive tone: harmonics h with amplitude h^-rolloff and an exponential decay."""
    n = max(int(dur * sr), 1)
    t = np.arange(n, dtype=np.float32) / sr
    harmonics = np.arange(1, 7)
    harmonics = harmonics[harmonics * f0 < sr / 2 - 100]
    tone = (harmonics**-rolloff)[:, None] * np.sin(2 * np.pi * f0 * harmonics[:, None] * t)
    env = (1 - np.exp(-t / attack)) * np.exp(-t * 3.0 / dur)
    return amp * env * tone.sum(axis=0)


def _drum(kind: str, sr: int, rng: np.random.Generator, amp: float) -> np.ndarray:
    n = int(0.15 * sr)
    t = np.arange(n, dtype=np.float32) / sr
    if kind == "kick":
        return amp * np.sin(2 * np.pi * (60 + 80 * np.exp(-t * 30)) * t) * np.exp(-t * 25)
    noise = rng.standard_normal(n)
    decay = 40 if kind == "snare" else 90
    return amp * 0.5 * noise * np.exp(-t * decay)


def _add(buf: np.ndarray, sig: np.ndarray, start: int) -> None:
    end = min(buf.size, start + sig.size)
    if start < end:
        buf[start:end] += sig[: end - start]


def freq(midi: float) -> float:
    """A MIDI note number's frequency in Hz (A4 = 69 = 440 Hz)."""
    return 440.0 * 2 ** ((midi - 69) / 12)


def render_section(
    buf: np.ndarray,
    start_s: float,
    end_s: float,
    quadrant: int,
    song: dict,
    sr: int,
    rng: np.random.Generator,
) -> None:
    """Write one constant-emotion section [start_s, end_s) into buf."""
    vs, as_ = VA_SIGN[quadrant]
    s = song["strength"]
    # Arousal cues: tempo, density, loudness, brightness, percussion.
    tempo = song["tempo_base"] * (1 + 0.35 * s * as_) * rng.uniform(0.93, 1.07)
    beat = 60.0 / tempo
    density = 2 if as_ * s + rng.normal(0, 0.3) > 0 else 1  # notes per beat
    amp = song["gain"] * 10 ** ((6 * s * as_ + rng.normal(0, 1.5)) / 20)
    rolloff = song["rolloff"] - 0.6 * s * as_  # smaller roll-off = brighter
    drum_p = float(np.clip(0.5 + 0.45 * s * as_, 0.02, 0.98))
    attack = 0.005 if as_ > 0 else 0.03
    # Valence cues: mode, consonance, register.
    major = (vs * s + rng.normal(0, 0.35)) > 0
    scale = MAJOR if major else MINOR
    dissonance = float(np.clip(0.3 - 0.3 * s * vs, 0, 0.7))  # chance of a clashing tone
    register = 60 + song["key"] + int(round(5 * s * vs))  # MIDI centre of the melody

    t, degree = start_s, 0
    while t < end_s - 1e-3:
        # A chord every two beats: triad on a scale degree, sometimes with a clash.
        root_deg = int(rng.choice([0, 3, 4, 5]))
        chord = [scale[(root_deg + i) % 7] + 12 * ((root_deg + i) // 7) for i in (0, 2, 4)]
        if rng.random() < dissonance:
            chord.append(chord[0] + int(rng.choice([1, 6, 11])))  # minor 2nd, tritone, maj 7th
        dur = min(2 * beat, end_s - t)
        for pitch in chord:
            sig = _note(freq(register - 12 + pitch), dur, sr, rolloff + 0.5, 0.18 * amp, attack * 4)
            _add(buf, sig, int(t * sr))
        for b in range(2):
            bt = t + b * beat
            if bt >= end_s:
                break
            if rng.random() < drum_p:
                _add(buf, _drum("kick" if b == 0 else "snare", sr, rng, 0.6 * amp), int(bt * sr))
            for d in range(density):
                nt = bt + d * beat / density
                if nt >= end_s:
                    break
                degree = int(np.clip(degree + rng.integers(-2, 3), -3, 9))
                pitch = scale[degree % 7] + 12 * (degree // 7)
                length = min(beat / density, end_s - nt)
                sig = _note(freq(register + pitch), length, sr, rolloff, 0.3 * amp, attack)
                _add(buf, sig, int(nt * sr))
                if drum_p > 0.5 and rng.random() < drum_p:
                    _add(buf, _drum("hat", sr, rng, 0.25 * amp), int(nt * sr))
        t += 2 * beat


@dataclass(frozen=True)
class SongPlan:
    """What a song is before it is rendered: its emotion over time and its per-song cues."""

    duration: float
    dominant: int
    timeline: np.ndarray  # quadrant per second [n_seconds]
    sr: int
    song: dict  # strength, tempo_base, gain, rolloff, key


def plan_song(rng: np.random.Generator, cfg: SynthConfig) -> SongPlan:
    """The first draws of a song's generator, in the order render_song has always made them,
    so the continuous truth can be read without rendering the audio."""
    duration = float(rng.uniform(cfg.min_duration_s, cfg.max_duration_s))
    n_seconds = math.ceil(duration)
    dominant, timeline = quadrant_timeline(rng, n_seconds, cfg)
    sr = int(rng.choice(cfg.sample_rates))
    song = {
        "strength": float(rng.uniform(*cfg.cue_strength)),
        "tempo_base": float(rng.uniform(85, 120)),
        "gain": float(10 ** (rng.uniform(-8, 0) / 20)),
        "rolloff": float(rng.uniform(1.2, 2.4)),
        "key": int(rng.integers(-6, 6)),
    }
    return SongPlan(duration, dominant, timeline, sr, song)


def va_curve(plan: SongPlan) -> np.ndarray:
    """Per second (valence, arousal) [n_seconds, 2] on VA_SCALE: the song's cue strength times
    the second's quadrant signs, the value render_section's cues scale with."""
    signs = np.array([VA_SIGN[int(q)] for q in plan.timeline], dtype=float)
    return plan.song["strength"] * signs


def static_va(curve: np.ndarray) -> np.ndarray:
    """A song's (valence, arousal) [2]: the mean of its seconds. Our choice, because a clip's
    static rating is given after hearing all of it, so each second weighs the same and an
    excursion pulls the rating toward its own quadrant, where the dominant quadrant's value
    alone would rate a song with long excursions like one without. Its signs are the dominant
    quadrant's wherever the dominant holds a strict majority of seconds, which EXCURSION_RANGE
    keeps for every song of 11 s or more (at most round(0.45 n) < n / 2 seconds off the
    label)."""
    return curve.mean(axis=0)


def render_song(rng: np.random.Generator, cfg: SynthConfig):
    """Returns (audio [n] or [n, 2], sample rate, dominant quadrant, per-second truth)."""
    plan = plan_song(rng, cfg)
    duration, timeline, sr, song = plan.duration, plan.timeline, plan.sr, plan.song
    n_seconds = len(timeline)
    buf = np.zeros(int(duration * sr))
    # Render each run of equal seconds as one section.
    edges = [0] + [i for i in range(1, n_seconds) if timeline[i] != timeline[i - 1]] + [n_seconds]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        render_section(buf, a, min(b, duration), int(timeline[a]), song, sr, rng)
    noise_rms = 10 ** (rng.uniform(*cfg.noise_db) / 20)
    buf += noise_rms * rng.standard_normal(buf.size)
    peak = np.max(np.abs(buf))
    if peak > 0.99:  # keep loudness differences but never clip
        buf *= 0.99 / peak
    if rng.random() < cfg.stereo_probability:
        buf = np.stack([buf, buf * rng.uniform(0.7, 1.0)], axis=1)
    return buf.astype(np.float32), sr, plan.dominant, timeline


def song_id_of(index: int) -> str:
    return f"SY{index:010d}"


def _write_song(args: tuple[Path, SynthConfig, int]) -> tuple[str, int, list[int]]:
    """Render and write song i (one generator per song: song i is the same whatever n_songs)."""
    audio_root, cfg, i = args
    rng = np.random.default_rng([cfg.seed, i])
    audio, sr, dominant, timeline = render_song(rng, cfg)
    names, weights = zip(*cfg.formats, strict=True)
    ext = str(rng.choice(names, p=np.asarray(weights) / sum(weights)))
    path = audio_root / f"Q{dominant + 1}" / f"{song_id_of(i)}.{ext}"
    if not path.is_file():
        tmp = path.with_name(f".{path.stem}.tmp.{ext}")  # atomic: never a half-written file
        write_audio_blocks(tmp, audio, sr, ext)
        tmp.replace(path)
    return song_id_of(i), dominant, timeline.tolist()


# Frames per write call. libvorbis stack-allocates a float per sample handed to it in one call
# (alloca in _preextrapolate_helper), so one sf.write of a long 48 kHz song (> ~2 M frames,
# 8 MB) overflows the stack and segfaults (libsndfile#1095, xiph/vorbis#104). Small blocks
# avoid it for every format.
WRITE_BLOCK_FRAMES = 1 << 16


def write_audio_blocks(path: Path, audio: np.ndarray, sr: int, ext: str) -> None:
    """Write audio [n] or [n, channels] as `ext` (wav/flac/ogg/mp3) in blocks."""
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    with sf.SoundFile(path, "w", samplerate=sr, channels=channels, format=ext.upper()) as fh:
        for lo in range(0, len(audio), WRITE_BLOCK_FRAMES):
            fh.write(audio[lo : lo + WRITE_BLOCK_FRAMES])


def generate_corpus(
    out: Path, cfg: SynthConfig = SynthConfig(), progress: bool = True, workers: int | None = None
) -> Path:
    """Write the corpus under `out` in the 4Q layout (songs in parallel processes). A corpus
    already there from the same config is kept: its synth_config.json is written last, so its
    presence means every song and every CSV are complete. One finished before the continuous
    truth existed gets its V/A files added; nothing of it is rewritten."""
    out = Path(out)
    done, pending = out / "synth_config.json", out / PENDING
    wanted = json.loads(json.dumps(asdict(cfg)))
    if done.is_file() and json.loads(done.read_text()) == wanted:
        if not all((out / name).is_file() for name in VA_FILES):
            write_va_truth(out, cfg)
        return out
    check_same_corpus(out, wanted)
    out.mkdir(parents=True, exist_ok=True)
    pending.write_text(json.dumps(wanted, indent=2))
    audio_root = out / "MER_audio_taffc_dataset"
    for q in range(4):
        (audio_root / f"Q{q + 1}").mkdir(parents=True, exist_ok=True)
    jobs = [(audio_root, cfg, i) for i in range(cfg.n_songs)]
    workers = workers or min(os.cpu_count() or 1, 8)
    with ProcessPoolExecutor(workers) as pool:
        results = list(
            tqdm(
                pool.map(_write_song, jobs, chunksize=4),
                total=len(jobs),
                desc="synth songs",
                unit="song",
                disable=not progress,
            )
        )
    labels, truth_rows = [], []
    for song, dominant, timeline in results:
        labels.append({"Song": song, "Quadrant": f"Q{dominant + 1}"})
        truth_rows += [
            {"Song": song, "Second": s, "Quadrant": f"Q{q + 1}"} for s, q in enumerate(timeline)
        ]
    _write_csv(out / "panda_dataset_taffc_annotations.csv", ["Song", "Quadrant"], labels)
    _write_csv(out / "ground_truth_per_second.csv", ["Song", "Second", "Quadrant"], truth_rows)
    write_va_truth(out, cfg)
    (out / "synth_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    pending.unlink()
    return out


VA_FILES = (VA_MANIFEST_CSV, VA_PER_SECOND_CSV, VA_TRUTH_JSON)


def write_va_truth(out: Path, cfg: SynthConfig) -> None:
    """The continuous truth of the corpus under `out`, in the manifest loader's layout (one
    static row per song, one per-second row per second), beside its audio. Each song's plan is
    drawn again from its own generator: the same draws that shaped its audio, none new."""
    audio_root = out / "MER_audio_taffc_dataset"
    static_rows, second_rows = [], []
    for i in range(cfg.n_songs):
        song = song_id_of(i)
        plan = plan_song(np.random.default_rng([cfg.seed, i]), cfg)
        curve = va_curve(plan)
        valence, arousal = map(float, static_va(curve))
        path = _audio_file(audio_root / f"Q{plan.dominant + 1}", song).relative_to(out)
        static_rows.append(
            {"id": song, "path": path.as_posix(), "valence": valence, "arousal": arousal}
        )
        second_rows += [
            {"id": song, "time": s, "valence": float(v), "arousal": float(a)}
            for s, (v, a) in enumerate(curve)
        ]
    _write_csv(out / VA_MANIFEST_CSV, ["id", "path", "valence", "arousal"], static_rows)
    _write_csv(out / VA_PER_SECOND_CSV, ["id", "time", "valence", "arousal"], second_rows)
    _write_json(out / VA_TRUTH_JSON, va_truth_description())


def _audio_file(folder: Path, song: str) -> Path:
    """The song's audio file: its extension is drawn after the audio, so the file on disk
    says which it was (the hidden temporary files of a write under way never match)."""
    found = sorted(folder.glob(f"{song}.*"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{folder}: expected one audio file of {song}, found {len(found)}; the corpus is "
            "incomplete: delete that directory and run sssl synth again"
        )
    return found[0]


def va_truth_description() -> dict:
    """What va_truth.json says about the V/A files: their scale and how they were made."""
    return {
        "scale": list(VA_SCALE),
        "midpoint": VA_MIDPOINT,
        "per_second": (
            f"{VA_PER_SECOND_CSV}: per second, the song's cue strength times the sign of the "
            "second's quadrant (valence + in Q1 and Q4, arousal + in Q1 and Q2)"
        ),
        "static": f"{VA_MANIFEST_CSV}: per song, the mean of its seconds",
        "load_with": (
            f"sssl shard --dataset manifest --root CORPUS/{VA_MANIFEST_CSV} --truth "
            f"CORPUS/{VA_PER_SECOND_CSV} --midpoint {VA_MIDPOINT:g} --out SHARDS"
        ),
    }


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


# What a corpus under way was started with; removed once synth_config.json is written.
PENDING = ".synth_config.pending.json"


def check_same_corpus(out: Path, wanted: dict) -> None:
    """Refuse to write a corpus over one of another configuration, finished or not: a song
    whose file is already there is kept as it is (that is how an interrupted run resumes), so
    its audio would belong to the other configuration while the labels and the truth belong
    to this one, and the other's songs in other folders would stay beside them. Only the song
    count may change: song i is the same whatever the count."""
    for name, what in (("synth_config.json", "a corpus"), (PENDING, "an unfinished corpus")):
        path = out / name
        if not path.is_file():
            continue
        before = json.loads(path.read_text())
        changed = [
            f"{k}: {before.get(k)} -> {v}"
            for k, v in wanted.items()
            if k != "n_songs" and before.get(k) != v
        ]
        if changed:
            raise ValueError(
                f"{out} holds {what} of another configuration ({', '.join(changed[:3])}): "
                "writing this one into it would mix the two. Use a new --out, or delete that "
                "directory"
            )


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
