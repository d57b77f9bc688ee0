"""Output of an evaluation (:mod:`jmsra_env.evaluation`): terminal table, CSV / JSON / Markdown and PNG figures, written atomically.

Every file is rendered in memory first and then written as ``<name>.tmp`` + :func:`os.replace`, so
a failed run never leaves a half-written file and never replaces an earlier result with a broken one.
``summary.csv``, ``rounds.csv`` and the sweep CSVs hold only seeded quantities (no timings) and are
byte-identical for the same arguments; decision timings go to ``timing.csv`` (and into the JSON and
Markdown, which are therefore not byte-stable).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_write",
    "ResultFolder",
    "EVALUATION_FILES",
    "sweep_files",
    "plain_table",
    "csv_text",
    "markdown_table",
    "json_text",
    "print_summary",
    "print_sweep",
    "cdf_png",
    "bars_png",
    "sweep_png",
    "SUMMARY_HEADERS",
]

# Terminal / Markdown headers of the summary columns shown (CSV keeps the machine names).
SUMMARY_HEADERS = {
    "policy": "policy",
    "mean_latency_s": "mean E2E [s]",
    "ci95_s": "95% CI [s]",
    "p50_latency_s": "p50 [s]",
    "p95_latency_s": "p95 [s]",
    "gap_pct": "gap [%]",
    "kv_share": "KV share",
    "capped_rate": "capped",
    "evictions_per_episode": "evictions/ep",  # session rollouts only
    "pool_used_fraction": "pool used",  # session rollouts only
    "decision_ms_per_round": "decide [ms/round]",
    "single_round_decision_ms": "single [ms]",
}


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a uniquely named temporary file in the same folder, fsync and
    ``os.replace``: readers see the old file or the new one, never a part (the one atomic writer
    of the package; training's saves use it too)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# The result sets evaluate.py writes: an evaluation's files, or one sweep's.
EVALUATION_FILES = (
    "summary.csv", "rounds.csv", "timing.csv", "summary.json", "summary.md", "latency_cdf.png", "latency_bars.png",
)
_SWEEP_FILE = re.compile(r"sweep_[A-Za-z0-9_-]+\.(csv|png)")


def sweep_files(name: str) -> tuple[str, str]:
    """The result set of sweep ``name``."""
    return f"sweep_{name}.csv", f"sweep_{name}.png"


def _is_output(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and (
        path.name in EVALUATION_FILES or _SWEEP_FILE.fullmatch(path.name) is not None
    )


class ResultFolder:
    """An output folder replaced as one unit: a result set is never half-written or mixed.

    Created *before* any computation: it checks that ``out`` is (or can become) a folder holding
    only evaluate.py outputs and creates the staging folder next to it (so an unwritable place is
    an error before anything runs). :meth:`commit` writes the new result set into the staging
    folder, copies the other result sets already in ``out`` (an evaluation and sweeps share a
    folder), drops the files of ``result_set`` that this run no longer produces (stale: returned
    for the user) and swaps the staging folder in with two renames. A failure before the swap
    leaves ``out`` as it was; :meth:`abort` removes the staging folder.
    """

    def __init__(self, out: str | os.PathLike, result_set: Sequence[str]):
        self.out = Path(os.path.abspath(out))
        self.result_set = tuple(result_set)
        self.committed = False
        try:
            self._recover()
        except OSError as exc:
            raise ValueError(f"--out {str(out)!r}: cannot restore an interrupted earlier run: {exc}") from None
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a folder")
        if self.out.is_dir():
            foreign = sorted(p.name for p in self.out.iterdir() if not _is_output(p))
            if foreign:
                shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
                raise ValueError(
                    f"--out {str(out)!r} holds files evaluate.py does not write ({shown}); it replaces its "
                    "output folder as a whole, so give a new folder or one holding only evaluate.py results"
                )
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.cleaned = clean_stale_staging(self.out)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.{os.getpid()}.", suffix=".staging",
                                                 dir=self.out.parent))
            umask = os.umask(0)
            os.umask(umask)
            mode = self.out.stat().st_mode & 0o7777 if self.out.is_dir() else 0o777 & ~umask
            os.chmod(self.staging, mode)  # mkdtemp's 0700 would become the output folder's
        except OSError as exc:
            raise ValueError(f"--out {str(out)!r} cannot be written: {exc.strerror or exc}") from None

    def _recover(self) -> None:
        """A run killed between the two renames of :meth:`commit` left the previous result set as
        ``.<out>.<pid>.old`` and no ``out``: put it back."""
        if self.out.exists() or not self.out.parent.is_dir():
            return
        olds = sorted(self.out.parent.glob(f".{glob.escape(self.out.name)}.*.old"), key=lambda p: p.stat().st_mtime)
        if olds:
            os.rename(olds[-1], self.out)

    def commit(self, files: Mapping[str, bytes | str]) -> list[str]:
        """Write ``files`` as the new result set and swap it in; returns the stale files removed."""
        stale = []
        if self.out.is_dir():
            for p in sorted(self.out.iterdir()):
                if p.name in files or not _is_output(p):
                    continue
                if p.name in self.result_set:
                    stale.append(p.name)
                else:
                    shutil.copy2(p, self.staging / p.name)
        for name, data in files.items():
            raw = data.encode("utf-8") if isinstance(data, str) else data
            with open(self.staging / name, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.{os.getpid()}.old")
            os.rename(self.out, old)
            try:
                os.rename(self.staging, self.out)
            except OSError:
                os.rename(old, self.out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.staging, self.out)
        self.committed = True
        return stale

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's live process (or a pid we cannot ask about): keep its folder
    return True


def clean_stale_staging(out: str | os.PathLike) -> list[Path]:
    """Remove the staging folders of ``out`` left by runs that were killed (SIGKILL, power loss):
    ``.<out>.<pid>.<random>.staging`` whose process is gone, and empty ones of the older naming
    without a pid. Folders of live processes are kept. Returns what was removed."""
    out = Path(os.path.abspath(out))
    removed = []
    if not out.parent.is_dir():
        return removed
    prefix = f".{out.name}."
    for p in out.parent.glob(f"{glob.escape(prefix)}*.staging"):
        if not p.is_dir() or p.is_symlink():
            continue
        middle = p.name[len(prefix):-len(".staging")]
        pid_text, _, rest = middle.partition(".")
        if rest and pid_text.isdigit():
            stale = not _pid_alive(int(pid_text))
        else:  # the naming before pids: only an empty one is certainly nobody's result
            stale = not any(p.iterdir())
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _cell(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if not math.isfinite(value) else format(float(value), ".9g")
    return str(value)


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Deterministic CSV (9 significant digits, NaN as an empty cell, ``\\n`` line ends)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row.get(c, "")) for c in columns])
    return buf.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


def json_text(obj: Any) -> str:
    """Indented JSON with NaN as ``null``."""
    return json.dumps(_jsonable(obj), indent=2) + "\n"


def _fmt(col: str, value: Any, row: Mapping[str, Any] | None = None) -> str:
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return "-"
    if col == "ci95_s":
        return f"±{value:.4f}"
    if col in ("mean_latency_s", "p50_latency_s", "p95_latency_s"):
        return f"{value:.4f}"
    if col == "gap_pct":
        ci = row.get("gap_ci95_pct") if row else None
        if row and row.get("policy") == row.get("reference"):
            return "ref"
        digits = 2 if abs(value) >= 1 else 3 if abs(value) >= 0.01 else 4
        s = f"{value:+.{digits}f}"
        return s + (f" ±{ci:.{digits}f}" if ci is not None and math.isfinite(ci) else "")
    if col == "evictions_per_episode":
        return f"{value:.2f}"
    if col in ("kv_share", "capped_rate", "pool_used_fraction"):
        return f"{value:.3f}"
    if col in ("decision_ms_per_round", "single_round_decision_ms"):
        return f"{value:.3g}"
    return str(value)


def _display_rows(summary: Sequence[Mapping[str, Any]], timing: Sequence[Mapping[str, Any]] | None):
    by_label = {t["policy"]: t for t in (timing or [])}
    cols = [
        c for c in SUMMARY_HEADERS
        if (timing or c not in ("decision_ms_per_round", "single_round_decision_ms"))
        and (c not in ("evictions_per_episode", "pool_used_fraction") or any(c in r for r in summary))
    ]
    out = []
    for row in summary:
        merged = {**row, **by_label.get(row["policy"], {})}
        out.append([_fmt(c, merged.get(c, float("nan")), merged) for c in cols])
    return cols, out


def markdown_table(
    summary: Sequence[Mapping[str, Any]], timing: Sequence[Mapping[str, Any]] | None = None
) -> str:
    """The summary (and timings) as a GitHub Markdown table."""
    cols, body = _display_rows(summary, timing)
    right = [c != "policy" for c in cols]
    lines = ["| " + " | ".join(SUMMARY_HEADERS[c] for c in cols) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def plain_table(
    summary: Sequence[Mapping[str, Any]],
    timing: Sequence[Mapping[str, Any]] | None = None,
    *,
    title: str | None = None,
    footer: str | None = None,
) -> str:
    """The summary (and timings) as aligned plain text, for logs and terminals without rich."""
    cols, body = _display_rows(summary, timing)
    table = [[SUMMARY_HEADERS[c] for c in cols], *body]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [title] if title else []
    lines += [line(table[0]), "-" * len(line(table[0]))] + [line(r) for r in body]
    if footer:
        lines.append(footer)
    return "\n".join(lines)


def _print_table(table) -> None:
    """Print a rich table at its natural width: never truncate numbers to fit a narrow terminal."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(highlight=False)
    needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if needed > console.width:
        console = Console(highlight=False, width=needed)
    console.print(table)


def print_summary(
    summary: Sequence[Mapping[str, Any]],
    timing: Sequence[Mapping[str, Any]] | None,
    title: str,
    caption: str = "",
) -> None:
    """The summary as a rich table on the terminal."""
    from rich.table import Table
    from rich.text import Text

    cols, body = _display_rows(summary, timing)
    table = Table(title=Text(title), caption=Text(caption) if caption else None, caption_justify="left")
    for c in cols:
        table.add_column(Text(SUMMARY_HEADERS[c]), justify="left" if c == "policy" else "right")
    for cells in body:
        table.add_row(*(Text(c) for c in cells))
    _print_table(table)


def print_sweep(rows: Sequence[Mapping[str, Any]], title: str, value_fmt, session: bool = False) -> None:
    """Mean latency per sweep value (rows) and policy (columns) on the terminal."""
    from rich.table import Table
    from rich.text import Text

    values: list[Any] = []
    policies: list[str] = []
    cell: dict[tuple[Any, str], Mapping[str, Any]] = {}
    for r in rows:
        if r["value"] not in values:
            values.append(r["value"])
        if r["policy"] not in policies:
            policies.append(r["policy"])
        cell[(r["value"], r["policy"])] = r
    session = session and bool(rows)  # a session scenario's rows carry evictions per episode
    caption = "mean E2E latency [s] ± 95% CI (t over episodes)" + (" (evictions per episode)" if session else "")
    table = Table(title=Text(title), caption=Text(caption), caption_justify="left")
    table.add_column("value")
    for p in policies:
        table.add_column(Text(p), justify="right")
    for v in values:
        cells = []
        for p in policies:
            r = cell.get((v, p))
            if r is None:
                cells.append("-")
            else:
                ci = r["ci95_s"]
                cells.append(
                    f"{r['mean_latency_s']:.3f}" + (f" ±{ci:.3f}" if math.isfinite(ci) else "")
                    + (f" ({r['evictions_per_episode']:.1f})" if session else "")
                )
        table.add_row(Text(value_fmt(v)), *(Text(c) for c in cells))
    _print_table(table)


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib, Agg backend, rendered to bytes)


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    _figure().close(fig)
    return buf.getvalue()


def cdf_png(latencies: Mapping[str, np.ndarray], title: str) -> bytes:
    """Empirical CDF of the per-round E2E latency of every policy (log x axis)."""
    plt = _figure()
    from matplotlib.ticker import LogLocator, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = ("-", "--", "-.", ":")
    k = len(latencies)
    for i, (label, lat) in enumerate(latencies.items()):
        x = np.sort(np.asarray(lat))
        y = np.arange(1, x.size + 1) / x.size
        # Thick solid first, thinner dashed later: curves that coincide (optimal / JMSRA) stay visible.
        lw = 4.0 - 3.0 * i / max(k - 1, 1)
        ax.step(x, y, where="post", label=label, lw=lw, ls=styles[i % len(styles)])
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("E2E latency per round [s]")
    ax.set_ylabel("fraction of rounds")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def bars_png(summary: Sequence[Mapping[str, Any]], title: str) -> bytes:
    """Mean E2E latency per policy with 95 % CI error bars."""
    plt = _figure()
    labels = [r["policy"] for r in summary]
    means = np.array([r["mean_latency_s"] for r in summary], dtype=float)
    ci = np.array([r["ci95_s"] for r in summary], dtype=float)
    ci = np.where(np.isfinite(ci), ci, 0.0)
    palette = {"expert": "tab:green", "ppo": "tab:purple", "bound": "tab:blue"}
    colors = [palette.get(r["kind"], "tab:gray") for r in summary]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.5))
    x = np.arange(len(labels))
    ax.bar(x, means, yerr=ci, capsize=4, color=colors)
    for xi, m in zip(x, means):
        ax.annotate(f"{m:.2f}", (xi, m), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("mean E2E latency [s] (95% CI)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def sweep_png(
    rows: Sequence[Mapping[str, Any]],
    title: str,
    xlabel: str,
    *,
    log_x: bool,
    categorical: bool,
    x_scale: float = 1.0,
) -> bytes:
    """Mean E2E latency (95 % CI) against the swept parameter, one line per policy."""
    plt = _figure()
    values: list[Any] = []
    for r in rows:
        if r["value"] not in values:
            values.append(r["value"])
    policies: list[str] = []
    for r in rows:
        if r["policy"] not in policies:
            policies.append(r["policy"])
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = (("-", "o"), ("-", "s"), ("--", "^"), (":", "x"), ("-.", "d"), ("--", "v"))
    for i, p in enumerate(policies):
        ls, marker = styles[i % len(styles)]
        pts = [r for r in rows if r["policy"] == p]
        if categorical:
            xs = [values.index(r["value"]) for r in pts]
        else:
            xs = [float(r["value"]) / x_scale for r in pts]
        ys = [r["mean_latency_s"] for r in pts]
        es = [r["ci95_s"] if math.isfinite(r["ci95_s"]) else 0.0 for r in pts]
        ax.errorbar(xs, ys, yerr=es, ls=ls, marker=marker, ms=5, capsize=3, label=p, lw=1.6)
    if categorical:
        ax.set_xticks(range(len(values)), [str(v) for v in values], rotation=30, ha="right")
    elif log_x:
        ax.set_xscale("log")
        ax.set_xticks([float(v) / x_scale for v in values], [f"{float(v) / x_scale:g}" for v in values])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean E2E latency [s] (95% CI)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)
