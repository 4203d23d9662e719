#!/usr/bin/python3
"""bench/report.py RESULTS_DIR PAGE: writes PAGE (docs/benchmarks.md) and its plots
(docs/benchmarks-*.svg, beside it) from one bench/report.sh run.

RESULTS_DIR holds what report.sh wrote: env.txt (key=value), main.json, retire.json (Google
Benchmark JSON with every repetition), holders/*.json and trend/*.json (one file per binary and
round), counts-today.tsv and counts-base.tsv (bench/count.sh). The prose is bench/benchmarks.md.in;
this script fills its {{placeholders}} with tables. The written budgets of the instruction counts
are the hot-path guard's (tests/perf/budgets.txt, or $BENCH_BUDGETS in its format).

Metrics: real_time is wall time / iterations of all threads; cpu_time is CPU time / iterations
of all threads, i.e. what one operation costs the thread that runs it. Medians are computed here
over every repetition or round.
"""

import glob
import json
import math
import os
import re
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAN = float("nan")
HERE = os.path.dirname(os.path.abspath(__file__))
LAZYMM = [f"lazymm.{p}.{b}" for b in ("membarrier", "fence") for p in ("explicit", "implicit", "refcount")]
PEERS = ["urcu.memb", "intrusive_refcount", "shared_ptr", "atomic_shared_ptr"]
LABELS = {"floor": "floor (thread-local pointer store pair)", "shared_ptr": "std::shared_ptr copy per worker",
          "atomic_shared_ptr": "std::atomic<std::shared_ptr> load", "intrusive_refcount": "intrusive atomic refcount",
          "urcu.memb": "liburcu memb read-side section", "membarrier.call": "one bare membarrier() call (the unit)",
          "urcu.call_rcu": "liburcu memb call_rcu"}
# The target the instruction counts and times of issue #16 are stated for.
TARGET_VARIANT = ("implicit", "membarrier")


# ---- loading -----------------------------------------------------------------------------------

class Row:
    """One benchmark instance: medians over its repetitions (or rounds), and the runs themselves."""

    def __init__(self, name, runs):
        parts = name.split("/")
        self.workload, self.variant = parts[0], parts[1] if len(parts) > 1 else ""
        self.params = {k: num(v) for k, v in (p.split(":", 1) for p in parts[2:] if ":" in p)
                       if k not in ("threads", "iterations", "min_time", "repeats")}
        self.threads = int(runs[0].get("threads", 1))
        self.runs = runs
        self.error = next((r.get("error_message") for r in runs if r.get("error_occurred")), None)
        ok = [r for r in runs if not r.get("error_occurred")] or runs
        scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}[ok[0].get("time_unit", "ns")]
        self.real_all = [r["real_time"] * scale for r in ok]
        self.real, self.cpu = statistics.median(self.real_all), statistics.median(r["cpu_time"] * scale for r in ok)
        keys = {k for r in ok for k, v in r.items() if isinstance(v, (int, float)) and k not in (
            "real_time", "cpu_time", "iterations", "threads", "repetitions", "family_index",
            "per_family_instance_index", "repetition_index")}
        self.c = {k: statistics.median(r[k] for r in ok if k in r) for k in keys}
        self.worst = {k: max(r[k] for r in ok if k in r) for k in keys}

    @property
    def parallelism(self):
        return self.cpu / self.real if self.real > 0 else NAN


def num(v):
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


class Results:
    """Every row of one or more JSON files, found by workload, variant, threads and parameters."""

    def __init__(self, paths):
        runs, self.context = {}, {}
        for p in paths:
            with open(p) as f:
                data = json.load(f)
            self.context.update(data.get("context", {}))
            for b in data.get("benchmarks", []):
                if b.get("run_type") != "aggregate":
                    runs.setdefault(b.get("run_name", b["name"]), []).append(b)
        self.rows = [Row(n, rs) for n, rs in runs.items()]

    def find(self, workload, variant=None, threads=None, **params):
        return [r for r in self.rows if r.workload == workload and variant in (None, r.variant)
                and threads in (None, r.threads) and all(r.params.get(k) == v for k, v in params.items())]

    def one(self, workload, variant, threads=None, **params):
        return next((r for r in self.find(workload, variant, threads, **params) if not r.error), None)

    def values(self, workload, key):
        return sorted({getattr(r, key) if key == "threads" else r.params.get(key) for r in self.find(workload)} - {None})


def results(d, pattern):
    paths = sorted(glob.glob(os.path.join(d, pattern)))
    return Results(paths)


def load_env(d):
    with open(os.path.join(d, "env.txt")) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def load_counts(path):
    """{(policy, backend, loop): instructions per iteration} from bench/count.sh's TSV."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return {(p, b, loop): int(n) for p, b, loop, n, *_ in rows}


# ---- formatting --------------------------------------------------------------------------------

def fmt_ns(v):
    if v is None or math.isnan(v):
        return "n/a"
    for unit, scale in (("ms", 1e6), ("µs", 1e3)):
        if v >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f} ns" if v >= 10 else f"{v:.2f} ns" if v >= 1 else f"{v:.3f} ns"


def fmt_x(v):
    if v is None or math.isnan(v):
        return "n/a"
    return f"{v:.0f}×" if v >= 100 else f"{v:.1f}×" if v >= 10 else f"{v:.2f}×"


def fmt_rate(v):
    if v is None or math.isnan(v):
        return "n/a"
    return f"{v / 1e6:.2f} M/s" if v >= 1e6 else f"{v / 1e3:.1f} k/s" if v >= 1e3 else f"{v:.0f} /s"


def per_ctx(b):
    if b is None or math.isnan(b):
        return "n/a"
    return "0" if b == 0 else f"{b:.2f}" if b >= 0.1 else f"1/{1 / b:,.0f}"


def ratio(a, b):
    return a / b if a is not None and b and not math.isnan(a) and not math.isnan(b) else NAN


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def label(v):
    m = re.match(r"lazymm\.(batched_)?(\w+)\.(\w+)$", v)
    if not m:
        return LABELS.get(v, v)
    return f"lazymm {'**batched ' + m.group(2) + '**' if m.group(1) else m.group(2)} / {m.group(3)}"


def ordered(variants, order):
    return [v for v in order if v in variants] + sorted(v for v in variants if v not in order)


def verdict(ok):
    return "no data" if ok is None else "met" if ok else "**missed**"


def targets_table(rows):
    """rows: (target, measured, ok or None)."""
    return table(["target", "measured", "verdict"], [(t, m, verdict(ok)) for t, m, ok in rows])


def c(row, key):
    return row.c.get(key, NAN) if row else NAN


# ---- plots -------------------------------------------------------------------------------------

def save(fig, path):
    plt.rcParams["svg.hashsalt"] = "lazymm"
    fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)


def plot_lazy_pair(res, path):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = iter(plt.cm.tab20.colors[::2] + plt.cm.tab20.colors[1::2])
    for v in ordered({r.variant for r in res.find("lazy_pair")}, ["floor"] + LAZYMM + PEERS):
        pts = sorted((r.threads, r.cpu) for r in res.find("lazy_pair", v) if not r.error)
        counting = "refcount" in v or v in PEERS
        if pts:
            ax.plot(*zip(*pts), marker="o", linestyle="--" if counting else "-", color=next(colors),
                    label=label(v).replace("**", ""))
    ax.set(yscale="log", xlabel="threads", ylabel="CPU ns per pair, per thread (log)",
           title="Lazy transition pair on one shared context (lower is better)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    save(fig, path)


def plot_retire(res, path):
    variants = ordered({r.variant for r in res.find("retire")}, RETIRE_ORDER)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, t in enumerate(res.values("retire", "threads")):
        rates = [c(res.one("retire", v, t), "retired_per_s") / 1e6 for v in variants]
        ax.barh([k + 0.4 * i for k in range(len(variants))], rates, height=0.4, label=f"R = {t}")
    ax.set_yticks([k + 0.2 for k in range(len(variants))], [retire_label(v).replace("**", "") for v in variants],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="contexts retired per second (millions)", title="Batched retirement: retire rate (higher is better)")
    ax.legend()
    save(fig, path)


def plot_trend(trend, today, base, path):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8))
    names, rows = ["lazy pair", "real switch (K = 16)"], [("lazy_pair", {}), ("switch", {"K": 16})]
    p, b = TARGET_VARIANT
    for i, (tag, binary) in enumerate((("0.1", "lazymm_trend_base"), ("today", "lazymm_trend"))):
        ns = [trend_row(trend, binary, wl, f"lazymm.{p}.{b}", prm) for wl, prm in rows]
        a1.bar([k + 0.4 * i for k in range(2)], [r.real if r else 0 for r in ns], width=0.4, label=tag)
        counts = base if tag == "0.1" else today
        a2.bar([k + 0.4 * i for k in range(2)], [counts.get((p, b, x), 0) for x in ("pair", "switch")],
               width=0.4, label=tag)
    for ax, yl in ((a1, "ns per iteration (median, 1 thread)"), (a2, "instructions per iteration")):
        ax.set_xticks([0.2, 1.2], names)
        ax.set(ylabel=yl)
        ax.legend()
    fig.suptitle(f"Today against 0.1: implicit shootdown / membarrier (lower is better)")
    save(fig, path)


# ---- the trend and the instruction counts -------------------------------------------------------

def trend_row(trend, binary, workload, variant, params):
    return trend[binary].one(workload, variant, 1, **params)


def trend_table(trend, today, base):
    rows = []
    for v in ["floor"] + LAZYMM:
        p, b = v.split(".")[1:] if v != "floor" else ("-", "-")
        for wl, prm, loop in (("lazy_pair", {}, "pair"), ("switch", {"K": 16}, "switch")):
            now, old = (trend_row(trend, x, wl, v, prm) for x in ("lazymm_trend", "lazymm_trend_base"))
            if not now and not old:
                continue
            loop = "floor" if v == "floor" else loop
            what = f"{label(v)}, {'lazy pair' if wl == 'lazy_pair' else 'real switch, K = 16'}"
            rows.append([what, spread(old), spread(now), f"{now.real - old.real:+.2f} ns" if now and old else "n/a",
                         base.get((p, b, loop), "–"), today.get((p, b, loop), "–")])
            if v == "floor":
                break
    return table(["row", "0.1: ns", "today: ns", "difference", "0.1: instructions", "today: instructions"], rows)


def spread(r):
    if not r:
        return "n/a"
    return f"{r.real:.2f} ({min(r.real_all):.2f}–{max(r.real_all):.2f})"


def counts_table(today, base, budgets):
    rows = []
    for p in ("explicit", "implicit", "refcount", "batched_explicit", "batched_implicit"):
        for b in ("membarrier", "fence"):
            if (p, b, "pair") not in today:
                continue
            cells = [label(f"lazymm.{p}.{b}")]
            for loop in ("pair", "switch"):
                n, old, cap = today[(p, b, loop)], base.get((p, b, loop)), budgets.get((p, b, loop))
                cells += [f"{n} (0.1: {old})" if old is not None else str(n),
                          "–" if cap is None else f"≤ {cap}: {verdict(n <= cap)}"]
            rows.append(cells)
    return table(["policy / backend", "lazy pair", "budget", "real switch + go_lazy", "budget"], rows)


def load_budgets():
    """The hot-path guard's budgets (tests/perf/budgets.txt), or $BENCH_BUDGETS in the same format."""
    path = os.environ.get("BENCH_BUDGETS") or os.path.join(os.path.dirname(__file__), "..", "tests", "perf", "budgets.txt")
    loops = {"lazy_pair": "pair", "real_switch": "switch"}
    budgets = {}
    with open(path) as f:
        for line in f:
            row = line.split()
            if len(row) >= 4 and not row[0].startswith("#") and row[0] in loops:
                policy = row[1].replace("batched<", "batched_").replace("_shootdown", "").rstrip(">")
                budgets[(policy, row[2], loops[row[0]])] = int(row[3])
    return budgets


def release_targets(trend, today, base, budgets):
    p, b = TARGET_VARIANT
    v = f"lazymm.{p}.{b}"
    fl, pair, sw = today.get(("-", "-", "floor")), today.get((p, b, "pair")), today.get((p, b, "switch"))
    bpair, bsw = base.get((p, b, "pair")), base.get((p, b, "switch"))
    rows = [(f"instructions, {label(v)}: lazy pair ≤ floor + 9 (0.1: floor + {bpair - fl if bpair and fl else '?'})",
             f"floor + {pair - fl} ({pair} against {fl})" if pair and fl else "n/a",
             pair - fl <= 9 if pair and fl else None),
            (f"instructions, {label(v)}: one real switch + go_lazy ≤ 55 (0.1: {bsw})",
             f"{sw}" if sw else "n/a", sw <= 55 if sw else None)]
    over = [k for k, cap in budgets.items() if k in today and today[k] > cap]
    rows.append(("instructions: every policy × backend within its written budget",
                 f"{len(budgets)} budgets; over: {', '.join('/'.join(k) for k in over) or 'none'}" if budgets
                 else "no written budget given (BENCH_BUDGETS)", (not over) if budgets else None))
    now = lambda wl, var, **k: trend_row(trend, "lazymm_trend", wl, var, k)  # noqa: E731
    lp, fr = now("lazy_pair", v), now("lazy_pair", "floor")
    rows.append((f"time, 1 thread, {label(v)}: lazy pair ≤ 1.15× the floor",
                 f"{fmt_x(ratio(lp.real, fr.real))} ({fmt_ns(lp.real)} against {fmt_ns(fr.real)})" if lp and fr else "n/a",
                 ratio(lp.real, fr.real) <= 1.15 if lp and fr else None))
    s_now, s_old = now("switch", v, K=16), trend_row(trend, "lazymm_trend_base", "switch", v, {"K": 16})
    rows.append((f"time, 1 thread, {label(v)}: real switch (K = 16) ≤ 0.1's + 0.5 ns",
                 f"{s_now.real - s_old.real:+.2f} ns ({fmt_ns(s_now.real)} against {fmt_ns(s_old.real)})"
                 if s_now and s_old else "n/a", s_now.real - s_old.real <= 0.5 if s_now and s_old else None))
    return targets_table(rows)


# ---- sections 1-4 ------------------------------------------------------------------------------

def lazy_pair_table(res, t2):
    threads, floor2 = res.values("lazy_pair", "threads"), res.one("lazy_pair", "floor", t2)
    rows = []
    for v in ordered({r.variant for r in res.find("lazy_pair")}, ["floor"] + LAZYMM + PEERS):
        r2 = res.one("lazy_pair", v, t2)
        rows.append([label(v)] + [fmt_ns(c_cpu(res.one("lazy_pair", v, t))) for t in threads]
                    + [fmt_x(ratio(c_cpu(r2), c_cpu(floor2))), f"{r2.parallelism:.2f}" if r2 else "n/a"])
    return table(["variant"] + [f"{t} thr" for t in threads] + [f"× floor ({t2} thr)", f"parallelism ({t2} thr)"], rows)


def c_cpu(r):
    return r.cpu if r else NAN


def lazy_pair_targets(res, t2):
    rows, threads = [], res.values("lazy_pair", "threads")
    for v in LAZYMM[:2]:
        worst = max(((ratio(c_cpu(res.one("lazy_pair", v, t)), c_cpu(res.one("lazy_pair", "floor", t))), t)
                     for t in threads), default=(NAN, 0))
        rows.append((f"{label(v)}: lazy pair ≤ 1.3× the floor, every thread count", f"worst {fmt_x(worst[0])} "
                     f"at {worst[1]} threads", None if math.isnan(worst[0]) else worst[0] <= 1.3))
        a = res.one("lazy_pair", v, t2)
        # 0.1's target was against lazymm's refcount policy, which then counted every lazy hold;
        # since 0.2 its slot counts the context and its lazy pair is as cheap: the intrusive
        # refcount peer does what 0.1's refcount did.
        for peer in ("intrusive_refcount", "shared_ptr"):
            x = ratio(c_cpu(res.one("lazy_pair", peer, t2)), c_cpu(a))
            rows.append((f"{label(v)}: ≥ 20× faster than {label(peer)}, {t2} threads", fmt_x(x),
                         None if math.isnan(x) else x >= 20))
        flat = [ratio(c_cpu(res.one("lazy_pair", v, t)), c_cpu(res.one("lazy_pair", v, 1))) for t in threads]
        rows.append((f"{label(v)}: per-thread cost flat from 1 to {max(threads)} threads (≤ 1.3×)",
                     ", ".join(f"{t}: {x:.2f}" for t, x in zip(threads, flat)),
                     None if any(map(math.isnan, flat)) else max(flat) <= 1.3))
        d = res.one("drop_busy", v, busy=1, executors=t2)
        x = ratio(c(d, "p50_ns"), c(d, "unit_p50_ns"))
        rows.append((f"{label(v)}: final drop with {t2} busy executors ≤ 2× one membarrier call (section 3)",
                     f"{fmt_x(x)} ({fmt_ns(c(d, 'p50_ns'))})", None if math.isnan(x) else x <= 2))
    return targets_table(rows)


def switch_table(res):
    ks, threads = res.values("switch", "K"), res.values("switch", "threads")
    rows = [[label(v)] + [fmt_ns(c_cpu(res.one("switch", v, t, K=k))) for k in ks for t in threads]
            for v in ordered({r.variant for r in res.find("switch")}, ["floor"] + LAZYMM + PEERS)]
    return table(["variant"] + [f"K={k}, {t} thr" for k in ks for t in threads], rows)


def drop_columns(res):
    idle = [r.params for r in res.find("drop_idle")]
    cols = sorted({(p["executors"], p["holding"], p["holders"]) for p in idle}, key=lambda x: (x[1] != 1, x[0], x[1]))
    out = [("drop_idle", dict(busy=0, executors=n, holding=h, holders=hs),
            f"idle {n}" + ("" if h == 1 else ", none holding" if h == 0 else f", {hs} holding")) for n, h, hs in cols]
    return out + [("drop_busy", dict(busy=1, executors=n), f"busy {n}") for n in res.values("drop_busy", "executors")]


def drop_tables(res):
    cols = drop_columns(res)
    variants = ordered({r.variant for r in res.find("drop_idle") + res.find("drop_busy")}, ["membarrier.call"] + LAZYMM)

    def cell(r):
        if not r:
            return "n/a"
        unit = f" ({fmt_x(ratio(c(r, 'p50_ns'), c(r, 'unit_p50_ns')))})" if "unit_p50_ns" in r.c else ""
        return fmt_ns(c(r, "p50_ns")) + unit

    times = [[label(v)] + [cell(res.one(wl, v, **p)) for wl, p, _ in cols] for v in variants]
    counts = [[label(v)] + [f"{c(r, 'steals_per_drop'):.0f} / {c(r, 'barriers_per_drop'):.0f}" if r else "n/a"
                            for r in (res.one(wl, v, **p) for wl, p, _ in cols)]
              for v in variants if v != "membarrier.call"]
    hdr = [x[2] for x in cols]
    return table(["variant"] + hdr, times), table(["variant (steals / barriers)"] + hdr, counts)


def churn_table(res):
    threads, rows = res.values("churn", "threads"), []
    for v in ordered({r.variant for r in res.find("churn")}, LAZYMM):
        cells = [label(v)]
        for t in threads:
            r = res.one("churn", v, t)
            cells += [fmt_rate(1e9 / r.real), fmt_ns(r.cpu), fmt_rate(c(r, "exec_switch_per_s")),
                      per_ctx(c(r, "barriers_per_ctx"))] if r else ["n/a"] * 4
        rows.append(cells)
    hdr = [f"{h}, R={t}" for t in threads for h in ("retired/s", "CPU per context", "background switches/s",
                                                    "barriers per context")]
    return table(["variant"] + hdr, rows)


# ---- 5. batched retirement ---------------------------------------------------------------------

RETIRE_ORDER = [f"lazymm.{p}.{b}" for b in ("membarrier", "fence")
                for p in ("explicit", "implicit", "batched_explicit", "batched_implicit", "refcount")] + \
               ["shared_ptr", "urcu.call_rcu"]


def retire_label(v):
    if v == "shared_ptr":
        return "std::shared_ptr (make_shared + drop)"
    return label(v) + (" (inline)" if re.match(r"lazymm\.(explicit|implicit)\.", v) else "")


def refcount_of(v):
    return "lazymm.refcount.fence" if v.endswith(".fence") else "lazymm.refcount.membarrier"


def typical(r):
    return c(r, "drop_typ_ns") - c(r, "clock_ns")


def retire_tables(res):
    rs = res.values("retire", "threads")
    variants = ordered({r.variant for r in res.find("retire")}, RETIRE_ORDER)
    one = lambda v, t: res.one("retire", v, t)  # noqa: E731
    rate = lambda v, t: c(one(v, t), "retired_per_s")  # noqa: E731
    rates, drops, lats = [], [], []
    for v in variants:
        rates.append([retire_label(v)] + [x for t in rs for x in (
            fmt_rate(rate(v, t)), fmt_x(ratio(rate(v, t), rate("urcu.call_rcu", t))),
            fmt_x(ratio(rate(v, t), rate(refcount_of(v), t))), fmt_ns(c(one(v, t), "cpu_per_ctx_ns")),
            per_ctx(c(one(v, t), "barriers_per_ctx")) if v.startswith("lazymm") else "–")])
        drops.append([retire_label(v)] + [x for t in rs for x in (
            fmt_ns(c(one(v, t), "drop_p50_ns")), fmt_ns(c(one(v, t), "drop_p99_ns")),
            fmt_ns(c(one(v, t), "drop_mean_ns")), fmt_ns(typical(one(v, t))),
            fmt_x(ratio(typical(one(v, t)), typical(one(refcount_of(v), t)))))] + [fmt_ns(c(one(v, rs[0]), "clock_ns"))])
        if "batched" in v or v == "urcu.call_rcu":
            lats.append([retire_label(v)] + [x for t in rs for x in latency_cells(one(v, t), "batched" in v)])
    hdr = lambda names: ["variant"] + [f"{h}, R={t}" for t in rs for h in names]  # noqa: E731
    return (table(hdr(["retired/s", "× call_rcu", "× refcount", "CPU per context", "barriers per context"]), rates),
            table(hdr(["p50", "p99", "mean", "typical", "× refcount"]) + ["clock"], drops),
            table(hdr(["p50", "p99", "worst p99", "peak backlog", "worst peak", "bound"]), lats))


def latency_cells(r, batched):
    us = lambda x: fmt_ns(x * 1e3)  # noqa: E731
    if not r:
        return ["n/a"] * 6
    backlog = [f"{c(r, 'peak_backlog'):.0f}", f"{r.worst.get('peak_backlog', NAN):.0f}",
               f"{c(r, 'backlog_bound'):.0f}"] if batched else ["–"] * 3
    return [us(c(r, "lat_p50_us")), us(c(r, "lat_p99_us")), us(r.worst.get("lat_p99_us", NAN))] + backlog


def retire_targets(res):
    rows, rs = [], res.values("retire", "threads")
    for v in [x for x in RETIRE_ORDER if "batched" in x and res.find("retire", x)]:
        one = lambda t, var=v: res.one("retire", var, t)  # noqa: E731

        def per_r(fn, ok):
            vals = [(t, fn(one(t), t)) for t in rs]
            good = [not math.isnan(x) and ok(x) for _, x in vals]
            return "; ".join(f"R={t}: {fmt_x(x) if x >= 0.01 else per_ctx(x)}" for t, x in vals), all(good)

        if v.endswith("membarrier"):
            for peer, need in (("urcu.call_rcu", 1.0), ("lazymm.refcount.membarrier", 0.5)):
                m, ok = per_r(lambda r, t, p=peer: ratio(c(r, "retired_per_s"), c(res.one("retire", p, t), "retired_per_s")),
                              lambda x, n=need: x >= n)
                rows.append((f"{retire_label(v)}: retire rate ≥ {need:g}× {retire_label(peer)}", m, ok))
        m, ok = per_r(lambda r, t: c(r, "barriers_per_ctx"), lambda x: x <= 1 / 64)
        rows.append((f"{retire_label(v)}: ≤ 1/64 heavy barriers per retired context", m, ok))
        m, ok = per_r(lambda r, t: ratio(typical(r), typical(res.one("retire", refcount_of(v), t))), lambda x: x <= 2)
        rows.append((f"{retire_label(v)}: the dropping thread's typical cost ≤ 2× a refcount drop", m, ok))
        lat = [(t, c(one(t), "lat_p99_us")) for t in rs]
        rows.append((f"{retire_label(v)}: p99 retire→free ≤ 2 ms", "; ".join(f"R={t}: {fmt_ns(x * 1e3)}" for t, x in lat),
                     all(x <= 2000 for _, x in lat)))
        pk = [(t, c(one(t), "peak_backlog"), c(one(t), "backlog_bound")) for t in rs]
        rows.append((f"{retire_label(v)}: peak backlog within the bound", "; ".join(f"R={t}: {p:.0f} of {b:.0f}" for t, p, b in pk),
                     all(p <= b for _, p, b in pk)))
    return targets_table(rows)


# ---- 6. holder sets ----------------------------------------------------------------------------

HOLDER_CASES = [("1024 registered (parked), none holding", dict(executors=1024, holding=0, holders=0), "≤ 0.1×"),
                ("1024 registered (parked), 2 holding", dict(executors=1024, holding=2, holders=2), "≤ 1.5×"),
                ("1024 registered (parked), 1024 holding", dict(executors=1024, holding=1, holders=1024), "≤ without"),
                ("16 registered (parked), 2 holding", dict(executors=16, holding=2, holders=2), "")]


def holder_tables(on, off):
    drops, targets = [], []
    for pol in ("explicit", "implicit"):
        for name, prm, goal in HOLDER_CASES:
            a, b = (x.one("drop_idle", f"lazymm.{pol}.membarrier", busy=0, **prm) for x in (on, off))
            xa, xb = ratio(c(a, "p50_ns"), c(a, "unit_p50_ns")), ratio(c(b, "p50_ns"), c(b, "unit_p50_ns"))
            drops.append([f"{pol}: {name}", fmt_ns(c(a, "p50_ns")), fmt_x(xa), fmt_ns(c(b, "p50_ns")), fmt_x(xb)])
            ok = {"≤ 0.1×": xa <= 0.1, "≤ 1.5×": xa <= 1.5, "≤ without": xa <= xb * 1.05}.get(goal)
            if goal:
                targets.append((f"{pol} / membarrier, {name}: final drop {goal} one membarrier call"
                                if goal != "≤ without" else f"{pol} / membarrier, {name}: no slower than without sets",
                                f"{fmt_x(xa)} (without: {fmt_x(xb)})", None if math.isnan(xa) else ok))
    switches = []
    for r in sorted((r for r in on.rows if r.workload in ("switch", "lazy_pair")), key=lambda r: r.runs[0]["name"]):
        b = off.one(r.workload, r.variant, r.threads, **r.params)
        if not b:
            continue
        switches.append([f"`{r.runs[0]['run_name']}`", f"{r.real:.2f}", f"{b.real:.2f}", f"{r.real - b.real:+.2f}"])
        if r.workload == "switch":
            targets.append((f"`{r.runs[0]['run_name']}`: real switch ≤ +0.5 ns over without sets",
                            f"{r.real - b.real:+.2f} ns", r.real - b.real <= 0.5))
    return (table(["final drop, membarrier", "holder sets", "× membarrier", "without", "× membarrier"], drops),
            table(["row", "holder sets: ns", "without: ns", "difference"], switches), targets_table(targets))


# ---- section 7: jemalloc arenas per tenant (examples/jemalloc_tenants --bench) --------------------

JE_MODES = ["lazymm.implicit", "lazymm.batched", "scoped", "shared_ptr", "flush"]
JE_LABELS = {"lazymm.implicit": "(a) lazymm, lazy binding, `implicit_shootdown`",
             "lazymm.batched": "(a) lazymm, lazy binding, `batched<implicit_shootdown>`",
             "scoped": "(b) rebind on entry and exit of every task", "shared_ptr": "(c) `shared_ptr` lazy hold",
             "flush": "(d) rebind + tcache flush per task"}


def load_jemalloc(d):
    """The jemalloc_bench JSON lines of jemalloc.txt, and the run's last line (its verdict)."""
    path = os.path.join(d, "jemalloc.txt")
    if not os.path.exists(path):
        return [], None
    rows, verdict_line = [], None
    with open(path) as f:
        for line in f:
            if line.startswith("jemalloc_bench "):
                rows.append(json.loads(line[len("jemalloc_bench "):]))
            elif line.startswith("jemalloc_tenants --bench:"):
                verdict_line = line.strip()
    return rows, verdict_line


def je_find(rows, kind, mode, **kw):
    return next((r for r in rows if r.get("kind") == kind and r.get("mode") == mode
                 and all(r.get(k) == v for k, v in kw.items())), None)


def fmt_mib(b):
    return "n/a" if b is None else f"{b / 2**20:.2f} MiB"


def jemalloc_tables(rows, verdict_line):
    if not rows:
        none = "*Not run (jemalloc_tenants was not built: it needs libjemalloc-dev and libasio-dev).*"
        return none, none, none, none
    modes = [m for m in JE_MODES if je_find(rows, "throughput", m)]
    base = {loc: je_find(rows, "throughput", "flush", locality=loc) for loc in ("runs", "none")}
    scoped = {loc: je_find(rows, "throughput", "scoped", locality=loc) for loc in ("runs", "none")}
    thr = []
    for m in modes:
        cells = [JE_LABELS.get(m, m)]
        for loc in ("runs", "none"):
            r = je_find(rows, "throughput", m, locality=loc)
            cells += [fmt_rate(r["tasks_per_s"]) if r else "n/a"]
            cells += [fmt_x(ratio(r["tasks_per_s"], b[loc]["tasks_per_s"])) if r and b[loc] else "n/a"
                      for b in (base, scoped)]
            if loc == "runs":
                cells += [fmt_ns(r["p50_ns"]) if r else "n/a", fmt_ns(r["p99_ns"]) if r else "n/a"]
        r = je_find(rows, "throughput", m, locality="runs")
        cells.append(f"{r['foreign']} of {r['allocs_checked']}" if r else "n/a")
        thr.append(cells)
    throughput = table(["way of binding", "tasks/s, runs of 1–7", "× (d)", "× (b)", "task p50", "task p99",
                        "tasks/s, no locality", "× (d)", "× (b)", "allocations from another arena (sampled, runs)"], thr)
    td = []
    for m in modes:
        for nudged in (True, False):
            r = je_find(rows, "teardown", m, nudged=nudged)
            if r:
                td.append([JE_LABELS.get(m, m), "yes" if nudged else "no (the worker's own tick)", r["rounds"],
                           fmt_ns(r["p50_ns"]), fmt_ns(r["p99_ns"]), fmt_ns(r["max_ns"]), r["waited_for_next_task"]])
    teardown = table(["way of binding", "parked workers nudged", "rounds", "p50", "p99", "max",
                      "rounds that waited for the holders' next task"], td)
    mem = []
    for m in modes:
        r = je_find(rows, "throughput", m, locality="runs")
        pts = [b for _, b in r.get("memory", [])] if r else []
        mem.append([JE_LABELS.get(m, m), fmt_mib(statistics.mean(pts)) if pts else "n/a",
                    fmt_mib(max(pts)) if pts else "n/a", len(pts)])
    memory = table(["way of binding", "retired, not yet destroyed: mean", "max", "samples (every 10 ms)"], mem)
    tg = []
    for m in ("lazymm.implicit", "lazymm.batched"):
        for loc, need in (("runs", 2.0), ("none", None)):
            r, b = je_find(rows, "throughput", m, locality=loc), base[loc]
            x = ratio(r["tasks_per_s"], b["tasks_per_s"]) if r and b else NAN
            target = f"{m}: tasks/s ≥ 2 × (d) rebind + flush per task, " + \
                ("runs of 1–7" if need else "no locality (reported, no target)")
            tg.append((target, fmt_x(x), None if math.isnan(x) else (x >= need if need else True)))
        r = je_find(rows, "teardown", m, nudged=True)
        tg.append((f"{m}: teardown p99 with parked, nudged workers ≤ 2 ms", fmt_ns(r["p99_ns"]) if r else "n/a",
                   None if not r else r["p99_ns"] <= 2e6))
    r = je_find(rows, "teardown", "shared_ptr", nudged=True)
    tg.append(("(c) shared_ptr lazy hold: teardown unbounded while holders park",
               f"{r['waited_for_next_task']} of {r['rounds']} rounds waited for the holders' next task; max "
               f"{fmt_ns(r['max_ns'])}" if r else "n/a", None if not r else r["waited_for_next_task"] > 0))
    ok = all(r.get("checks_ok") for r in rows if "checks_ok" in r) and verdict_line is not None and \
        verdict_line.endswith("all checks passed")
    tg.append(("0 EFAULT from arena.<i>.destroy, arenas created = destroyed, 0 accesses to destroyed arenas, every run",
               verdict_line or "the run did not finish", ok))
    return throughput, teardown, memory, targets_table(tg)


def plot_jemalloc(rows, path):
    modes = [m for m in JE_MODES if je_find(rows, "throughput", m)]
    if not modes:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.38
    for i, loc in enumerate(("runs", "none")):
        vals = [(je_find(rows, "throughput", m, locality=loc) or {}).get("tasks_per_s", 0) / 1e3 for m in modes]
        a1.bar([k + (i - 0.5) * width for k in range(len(modes))], vals, width,
               label="runs of 1–7" if loc == "runs" else "no locality")
    a1.set_xticks(range(len(modes)), [m.replace("lazymm.", "lazymm\n") for m in modes], fontsize=8)
    a1.set_ylabel("tasks/s (thousands)")
    a1.set_title("Throughput, 2 workers, 4 tenants, 30 % context-free")
    a1.legend(fontsize=8)
    for m in modes:
        r = je_find(rows, "throughput", m, locality="runs")
        pts = r.get("memory", []) if r else []
        if pts:
            a2.plot([t for t, _ in pts], [b / 2**20 for _, b in pts], label=m, linewidth=1)
    a2.set_xlabel("ms into the run")
    a2.set_ylabel("MiB resident in retired, not yet destroyed arenas")
    a2.set_title("Tenant memory not yet returned (stats.arenas.<i>.resident)")
    a2.legend(fontsize=8)
    save(fig, path)


# ---- the page ----------------------------------------------------------------------------------

def machine_and_steps(env, ctx):
    machine = table(["", ""], [
        ("CPUs (nproc)", env.get("nproc")), ("CPU model", env.get("cpu_model")), ("Kernel", env.get("kernel")),
        ("Compiler", env.get("compiler")), ("Google Benchmark", env.get("benchmark_version")),
        ("liburcu", f"{env.get('urcu_version')}; {ctx.get('urcu_peer', '')}"),
        ("valgrind", env.get("valgrind_version")),
        ("lazymm membarrier backend", f"{ctx.get('lazymm_membarrier_backend', '?')} "
                                      f"({ctx.get('lazymm_membarrier_reason', '')})"),
        ("Commit", env.get("commit")), ("0.1 for the trend rows", env.get("base_commit")),
        ("Date", env.get("date")), ("Run time", f"{env.get('duration_s', '?')} s, build included")])
    steps = [("main", "sections 1-4"), ("retire", "section 5"), ("holders", "section 6"),
             ("trend", "the trend"), ("counts", "instruction counts"), ("jemalloc", "section 7")]
    lines = []
    for key, what in steps:
        cmd = env.get(f"cmd.{key}", "bench/count.sh (callgrind), on this tree and on 0.1" if key == "counts"
                      else "examples/jemalloc_tenants/jemalloc_tenants --bench (not built)")
        lines.append(f"- **{key}** ({what}): {env.get('step.' + key, 'not run')}.\n\n  ```sh\n  {cmd}\n  ```")
    return machine, "\n".join(lines)


def errors(named):
    """The rows that reported an error (left out of the tables), as a paragraph, or nothing."""
    rows = [f"- {what}: `{r.runs[0]['name']}`: {r.error}" for what, res in named for r in res.rows if r.error]
    return "\n**Rows that reported an error** (left out of the tables):\n\n" + "\n".join(rows) + "\n" if rows else ""


def fill(template, values):
    def sub(m):
        if m.group(1) not in values:
            raise SystemExit(f"report.py: no value for {{{{{m.group(1)}}}}}")
        return str(values[m.group(1)])
    return re.sub(r"\{\{(\w+)\}\}", sub, template)


def main(d, page, budgets):
    env = load_env(d)
    main_res, retire = results(d, "main.json"), results(d, "retire.json")
    on, off = results(d, "holders/lazymm_bench.*.json"), results(d, "holders/lazymm_bench_noset.*.json")
    trend = {b: results(d, f"trend/{b}.*.json") for b in ("lazymm_trend", "lazymm_trend_base")}
    today, base = load_counts(os.path.join(d, "counts-today.tsv")), load_counts(os.path.join(d, "counts-base.tsv"))
    t2 = min(2, int(env.get("nproc", 1)))
    machine, steps = machine_and_steps(env, main_res.context)
    drop_t, drop_counts = drop_tables(main_res)
    rate_t, drop_cost_t, lat_t = retire_tables(retire)
    h_drop, h_switch, h_targets = holder_tables(on, off)
    quick = env.get("quick", "0") not in ("", "0")
    je_rows, je_verdict = load_jemalloc(d)
    je_thr, je_td, je_mem, je_tg = jemalloc_tables(je_rows, je_verdict)
    named = [("main", main_res), ("retire", retire), ("holders", on), ("holders, without sets", off)] + \
        [(f"trend, {b}", r) for b, r in trend.items()]
    v = dict(env, base_commit=env.get("base_commit"), steps=steps, machine=machine, errors=errors(named),
             quick_warning="\n> **Quick mode (`BENCH_QUICK=1`)**: a smoke check of the pipeline; these figures are "
                           "noise and some rows are left out. Do not commit this page.\n" if quick else "",
             stamp=f"*Measured on commit {env.get('commit')}, {env.get('date')}, by `bench/report.sh`.*",
             targets=release_targets(trend, today, base, budgets), trend_table=trend_table(trend, today, base),
             floor_instr=today.get(("-", "-", "floor"), "n/a"), counts_table=counts_table(today, base, budgets),
             lazy_pair_table=lazy_pair_table(main_res, t2), lazy_pair_targets=lazy_pair_targets(main_res, t2),
             switch_table=switch_table(main_res), drop_table=drop_t, drop_counts_table=drop_counts,
             churn_table=churn_table(main_res), retire_rate_table=rate_t, retire_drop_table=drop_cost_t,
             retire_latency_table=lat_t, retire_targets=retire_targets(retire),
             holder_drop_table=h_drop, holder_switch_table=h_switch, holder_targets=h_targets,
             jemalloc_throughput_table=je_thr, jemalloc_teardown_table=je_td, jemalloc_memory_table=je_mem,
             jemalloc_targets=je_tg)
    with open(os.path.join(HERE, "benchmarks.md.in")) as f:
        text = fill(f.read(), v)
    with open(page, "w") as f:
        f.write(text)
    docs = os.path.dirname(os.path.abspath(page))
    plot_lazy_pair(main_res, os.path.join(docs, "benchmarks-lazy-pair.svg"))
    plot_retire(retire, os.path.join(docs, "benchmarks-retire.svg"))
    plot_trend(trend, today, base, os.path.join(docs, "benchmarks-trend.svg"))
    plot_jemalloc(je_rows, os.path.join(docs, "benchmarks-jemalloc.svg"))
    print(f"wrote {page} and its plots in {docs}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], load_budgets())
