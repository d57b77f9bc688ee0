"""Rendering of the last round: an ANSI per-agent table and a matplotlib figure."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import ScenarioConfig

__all__ = ["ansi_table", "rgb_figure"]

_MEDIA = ("NL", "KV")


def ansi_table(info: dict[str, Any] | None, obs: dict[str, np.ndarray] | None, cfg: ScenarioConfig) -> str:
    """A per-agent table of the last round (or of the current observation before any step)."""
    lines = []
    if info is None:
        lines.append(f"JMSRA round 0 (no decision yet), N = {cfg.n_agents}")
        lines.append(f"{'agent':>5} {'SNR dB':>8} {'load':>5} {'L tok':>6} {'K tok':>6}")
        if obs is not None:
            for i in range(cfg.n_agents):
                lines.append(
                    f"{i:>5} {obs['snr_db'][i]:>8.1f} {obs['load'][i]:>5.2f} "
                    f"{obs['context_tokens'][i]:>6.0f} {obs['nl_tokens'][i]:>6.0f}"
                )
        return "\n".join(lines) + "\n"
    capped = " (capped)" if info["capped"] else ""
    lines.append(
        f"JMSRA round {info['round']}: E2E latency {info['latency_s']:.4f} s{capped}, "
        f"answer {info['answer_s']:.4f} s, KV share {info['kv_share']:.2f}"
    )
    lines.append(
        f"{'agent':>5} {'medium':>6} {'bw MHz':>8} {'rate Mb/s':>10} {'compute s':>10} "
        f"{'tx s':>9} {'finish s':>9} {'recv s':>9}"
    )
    for i in range(cfg.n_agents):
        lines.append(
            f"{i:>5} {_MEDIA[int(info['media'][i])]:>6} {info['bandwidth_hz'][i] / 1e6:>8.3f} "
            f"{info['rate_bps'][i] / 1e6:>10.3f} {info['compute_s'][i]:>10.4f} "
            f"{info['transmission_s'][i]:>9.4f} {info['finish_s'][i]:>9.4f} {info['receiver_s'][i]:>9.4f}"
        )
    return "\n".join(lines) + "\n"


def rgb_figure(info: dict[str, Any] | None, obs: dict[str, np.ndarray] | None, cfg: ScenarioConfig) -> np.ndarray:
    """An RGB image (H, W, 3) uint8: media, bandwidth and latency parts per agent."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    n = cfg.n_agents
    fig = Figure(figsize=(8, 3.2), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax_bw, ax_lat = fig.subplots(1, 2)
    idx = np.arange(n)
    if info is None:
        media = np.zeros(n, dtype=int)
        bw = np.zeros(n)
        comp = tx = rx = np.zeros(n)
        title = "round 0: no decision yet"
    else:
        media = np.asarray(info["media"], dtype=int)
        bw = np.asarray(info["bandwidth_hz"]) / 1e6
        comp, tx, rx = info["compute_s"], info["transmission_s"], info["receiver_s"]
        title = f"round {info['round']}: T = {info['latency_s']:.3f} s" + (" (capped)" if info["capped"] else "")
    colors = np.where(media == 1, "tab:orange", "tab:blue")
    ax_bw.bar(idx, bw, color=colors)
    ax_bw.set_xlabel("agent (blue NL, orange KV)")
    ax_bw.set_ylabel("bandwidth (MHz)")
    tx_plot = np.where(np.isfinite(tx), tx, cfg.latency_cap_s)
    ax_lat.bar(idx, comp, label="compute")
    ax_lat.bar(idx, tx_plot, bottom=comp, label="transmission")
    ax_lat.bar(idx, rx, bottom=np.asarray(comp) + tx_plot, label="receiver")
    ax_lat.set_xlabel("agent")
    ax_lat.set_ylabel("latency (s)")
    ax_lat.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
