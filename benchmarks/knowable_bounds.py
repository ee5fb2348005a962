"""What the default simulated set lets any model reach at best, cutoff by cutoff, beside its oracle.

The truth file's oracle (the simulator's exact answer per parcel and order) knows what
no data can show: storms that begin after the order, each lane's hidden effect, each
customer's hidden buying rate and propensity to leave. Issue 12 judges EDD and churn
against it. This prints, for each backtest window, two references that know the
simulator's law and all its parameters but only what the data showed at the answer:

- **EDD, the knowable median.** The oracle's delivery distribution, with storms known
  only while under way at the order (generously, with their end), and each lane's effect
  learned from the lane's own deliveries before the order: a posterior on a grid, its
  prior the simulator's, each delivery's transit in operating days read exactly.
- **Churn, the best ranking.** Each customer's posterior over (buying rate, baseline
  propensity to leave) from their orders and deliveries so far, on a grid, and P(no
  order within 90 days) under it. No score ranks better in expectation (the
  Neyman-Pearson lemma); this one is generous too: it knows the contacts that follow a
  delivery before they happen.

Usage: .venv/bin/python benchmarks/knowable_bounds.py [--table demo.csv]
    (``--table``: an ``eddy backtest data/sets/demo --out demo.csv`` long table: its
    cutoffs, and its eddy and baseline figures printed beside; its oracle figures must
    equal the ones worked out here, a check that both judge the same rows.)
    The simulation is run again in memory with ``--customers``/``--seed``/``--end``
    (``eddy simulate``'s defaults: the default set); about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit, logit, ndtr
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data import simulate as sim  # noqa: E402
from eddy import settings  # noqa: E402

#: the demo backtest's cutoffs (``eddy backtest data/sets/demo``), when no table is given
DEMO_CUTOFFS = "2025-05-04,2025-06-03,2025-07-03,2025-08-02,2025-09-01,2025-10-01"
LANE_GRID = np.linspace(-4 * sim.LANE_EFFECT_SD, 4 * sim.LANE_EFFECT_SD, 57)  # the lane effect's grid
RATE_POINTS, BASELINE_POINTS = 160, 60  # equal-mass grids of the customers' priors
#: the oracle's figures here and in the table agree within this: the churn windows can
#: differ by a few orders whose parcel never came and had no promise (the truth file
#: judges them 10 days after the order; the data has no moment to judge them at); the
#: EDD windows agree exactly
CHECK_TOLERANCE = 0.001
MIN_JUDGED = 100  # parcels and orders a window needs for its figures


def lane_posteriors(world: sim.World, p: sim.Parcels) -> np.ndarray:
    """Per parcel, the posterior of its lane's effect on ``LANE_GRID`` given the lane's
    deliveries completed before its order (their transit in operating days, exact)."""
    t = p.truth
    n_cs = len(sim.CARRIER_SERVICES)
    lane = (p.warehouse * len(sim.REGIONS) + p.region) * n_cs + p.cs
    mu = _log_mu(t, slice(None), LANE_GRID)
    done = np.flatnonzero(p.outcome == 0)
    transit = (p.delivered_clock - p.ship_clock - sim.EXCEPTION_DAYS * p.exception
               - sim.FAILED_ATTEMPT_DAYS * p.failed_attempt)[done]
    loglik = -0.5 * ((np.log(transit)[:, None] - mu[done]) / t["sigma"][done, None]) ** 2
    by = np.lexsort((p.delivered[done], lane[done]))
    cum = np.vstack([np.zeros(len(LANE_GRID)), np.cumsum(loglik[by], axis=0)])
    key = lane[done][by] * 1e5 + p.delivered[done][by]  # lane-major, then delivered time (days < 1e5)
    before = np.searchsorted(key, lane * 1e5 + p.ordered, side="left")
    first = np.searchsorted(key, lane * 1e5, side="left")
    log_post = cum[before] - cum[first] - 0.5 * (LANE_GRID / sim.LANE_EFFECT_SD) ** 2
    post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    return post / post.sum(axis=1, keepdims=True)


def knowable_median(world: sim.World, p: sim.Parcels, pick: np.ndarray, posterior: np.ndarray,
                    grid: np.ndarray = LANE_GRID) -> np.ndarray:
    """Delivered moment (float days) of the knowable median of the ``pick`` parcels, their
    lane's effect weighed by ``posterior`` (a row per parcel, a column per ``grid`` value)."""
    t = p.truth
    calm = world.without_storms()
    day0 = np.clip(np.floor(p.ordered[pick]).astype(np.int64), 0, world.n_days - 1)
    under_way = world.storm_days[p.region[pick], day0]  # known at the order; later storms are not
    out = np.empty(len(pick))
    for w, rows in ((calm, np.flatnonzero(~under_way)), (world, np.flatnonzero(under_way))):
        for chunk in np.array_split(rows, max(1, len(rows) // 2000)):
            i = pick[chunk]
            cs, region = p.cs[i], p.region[i]
            clocks = [w.clock(cs, region, t[d][i] + sim.PICKUP_HOUR / 24.0) for d in ("first_day", "second_day")]
            p_exc = np.where(under_way[chunk], t["p_exc"][i], t["p_exc_calm"][i])
            shifts, weights = sim.delivery_mixture(*clocks, t["p_slow"][i], p_exc, t["p_att"][i])
            mu = _log_mu(t, i, grid)
            out[chunk] = w.delivery_moment(cs, region, _median(shifts, weights, mu, posterior[i], t["sigma"][i]))
    return out


def _log_mu(t: dict, rows, grid: np.ndarray) -> np.ndarray:
    """The lognormal transit's mu for the parcels ``rows`` (of the truth inputs ``t``) at
    each lane effect of ``grid``: a row per parcel, a column per grid value."""
    mean = sim.transit_mean(t["route_days"][rows, None], grid[None, :], t["rural"][rows, None], t["heavy"][rows, None])
    return np.log(mean) - 0.5 * t["sigma"][rows, None] ** 2


def _median(shifts, weights, mu, posterior, sigma) -> np.ndarray:
    """The median clock value of sum over lane effects g and components k of
    posterior_g * weight_k * (shift_k + LogNormal(mu_g, sigma)), by bisection."""
    w = posterior[:, :, None] * weights[:, None, :]
    lo, hi = shifts.min(axis=1), shifts.max(axis=1) + np.exp(mu.max(axis=1) + 5 * sigma)
    for _ in range(40):
        v = 0.5 * (lo + hi)
        gap = v[:, None, None] - shifts[:, None, :]
        z = (np.log(np.where(gap > 0, gap, 1.0)) - mu[:, :, None]) / sigma[:, None, None]
        below = (w * np.where(gap > 0, ndtr(z), 0.0)).sum(axis=(1, 2)) < 0.5
        lo, hi = np.where(below, v, lo), np.where(below, hi, v)
    return 0.5 * (lo + hi)


def churn_scores(world: sim.World, people: sim.Customers, orders: pd.DataFrame) -> np.ndarray:
    """Per order (sorted by customer, then order time), P(no order within 90 days of its
    judgment) under the customer's posterior given every earlier order and delivery."""
    u = (np.arange(RATE_POINTS) + 0.5) / RATE_POINTS
    shape, scale = sim.ORDER_RATE_GAMMA
    lam = np.clip(stats.gamma(shape, scale=scale).ppf(u), *sim.ORDER_RATE_CLIP) / 365.0  # the simulator's prior
    base = stats.norm(*sim.CHURN_BASELINE).ppf((np.arange(BASELINE_POINTS) + 0.5) / BASELINE_POINTS)
    clock = world.orders_clock
    ci = orders.customer_idx.to_numpy()
    ordered, ref = clock(orders.ordered.to_numpy()), clock(orders.ref.to_numpy())
    exposure = clock(orders.ref.to_numpy() + sim.CHURN_HORIZON_DAYS) - ref
    # the delivery's part of the churn log-odds (its count term too): a function of facts
    delivery = logit(orders.p_churn.to_numpy()) - people.baseline[ci]
    start = clock(np.array([world.t_start]))[0]
    out = np.empty(len(orders))
    edges = np.flatnonzero(np.r_[True, ci[1:] != ci[:-1], True])
    for s, e in zip(edges[:-1], edges[1:]):
        loglik = np.zeros((RATE_POINTS, BASELINE_POINTS))
        if people.existing[ci[s]]:  # the first order: an exponential wait from the data's start
            loglik += np.log(lam)[:, None] - lam[:, None] * (ordered[s] - start)
        for k in range(s, e):
            post = np.exp(loglik - loglik.max())
            p = expit(base[None, :] + delivery[k])
            out[k] = (post * (p + (1 - p) * np.exp(-lam[:, None] * exposure[k]))).sum() / post.sum()
            if k + 1 < e:  # stayed after order k, and ordered again this long after its judgment
                loglik += np.log1p(-expit(base + delivery[k]))[None, :] + np.log(lam)[:, None] \
                    - lam[:, None] * (ordered[k + 1] - ref[k])
    return out


def day_of(world: sim.World, ts) -> np.ndarray:
    """UTC timestamps as the simulator's float days."""
    return ((pd.Series(ts) - world.start) / pd.Timedelta(days=1)).to_numpy() + world.t_start


def orders_with_bound(result: sim.SimResult) -> pd.DataFrame:
    """Every order by customer, then order time: its judgment moment ``ref`` (float days),
    the oracle's and the bound's P(no order within 90 days), the label ``y`` (no order in
    fact) and whether it is ``mature`` (its 90 days ended inside the data)."""
    world, people = result.latent["world"], result.latent["customers"]
    truth = result.truth["orders"].merge(result.tables["orders"][["order_id", "ordered_at"]], on="order_id")
    orders = pd.DataFrame({"customer_idx": truth.customer_id.str[1:].astype(int).to_numpy() - 1,
                           "ordered": day_of(world, truth.ordered_at), "ref": day_of(world, truth.judged_at),
                           "p_churn": truth.p_churn.to_numpy(), "oracle": truth.p_no_order_90d.to_numpy()})
    orders = orders.sort_values(["customer_idx", "ordered"], kind="stable").reset_index(drop=True)
    orders["bound"] = churn_scores(world, people, orders)
    following = orders.groupby("customer_idx").ordered.shift(-1)
    orders["y"] = (following.isna() | (following > orders.ref + sim.CHURN_HORIZON_DAYS)).astype(float)
    orders["mature"] = orders.ref + sim.CHURN_HORIZON_DAYS <= world.t_end
    return orders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, help="an `eddy backtest --out` long table of the same set")
    ap.add_argument("--cutoffs", default=None, help=f"comma-separated (default: the table's, else {DEMO_CUTOFFS})")
    ap.add_argument("--horizon", type=float, default=60.0, help="days after each cutoff judged")
    ap.add_argument("--customers", type=int, default=settings.DEFAULT_DEMO_CUSTOMERS)
    ap.add_argument("--seed", type=int, default=settings.DEFAULT_SEED)
    ap.add_argument("--end", default="2026-02-28T23:59:59")
    args = ap.parse_args()
    table = None
    if args.table:
        table = pd.read_parquet(args.table) if args.table.suffix == ".parquet" else pd.read_csv(args.table)
        table["cutoff"] = pd.to_datetime(table.cutoff, utc=True)
    cutoffs = ([pd.Timestamp(c, tz="UTC") for c in args.cutoffs.split(",")] if args.cutoffs else
               sorted(table.cutoff.unique()) if table is not None else
               [pd.Timestamp(c, tz="UTC") for c in DEMO_CUTOFFS.split(",")])

    result = sim.simulate(sim.SimConfig(customers=args.customers, seed=args.seed, end=args.end), keep_latent=True)
    world, p = result.latent["world"], result.latent["parcels"]

    actual = (p.delivered - p.ordered) * 24.0
    delivered_by_end = (p.outcome == 0) & (p.delivered <= world.t_end)
    windows = [(c, day_of(world, [c])[0]) for c in cutoffs]
    pick = np.flatnonzero(delivered_by_end & np.any([(p.ordered >= lo) & (p.ordered < lo + args.horizon)
                                                      for _, lo in windows], axis=0))
    known = np.full(len(p.ordered), np.nan)
    known[pick] = knowable_median(world, p, pick, lane_posteriors(world, p))

    orders = orders_with_bound(result)

    print("cutoff      | EDD MAE days: oracle  knowable  eddy  eddy/oracle  eddy/knowable | "
          "churn ROC-AUC: oracle  bound  eddy  BG/NBD  RFM  bound-BG/NBD  bound/oracle")
    for cut, lo in windows:
        m = delivered_by_end & (p.ordered >= lo) & (p.ordered < lo + args.horizon)
        j = orders[orders.mature & (orders.ref >= lo) & (orders.ref < lo + args.horizon)]
        if m.sum() < MIN_JUDGED or len(j) < MIN_JUDGED or j.y.nunique() < 2:
            print(f"{cut.date()}  | too little to judge: {int(m.sum())} parcels delivered and {len(j)} orders "
                  f"matured in its window (need {MIN_JUDGED} each); is the cutoff inside the data?")
            continue
        mae = lambda h: float(np.mean(np.abs(h[m] - actual[m]))) / 24.0  # noqa: E731
        edd_oracle, edd_known = mae((p.truth["p50"] - p.ordered) * 24.0), mae((known - p.ordered) * 24.0)
        c_oracle, c_bound = roc_auc_score(j.y, j.oracle), roc_auc_score(j.y, j.bound)
        got = _from_table(table, cut)
        eddy = got.get(("at_order", "eddy", "edd_mae_days"), np.nan)
        print(f"{cut.date()}  | {edd_oracle:.3f}  {edd_known:.3f}  {eddy:.3f}  {eddy / edd_oracle:.3f}x  "
              f"{eddy / edd_known:.3f}x | {c_oracle:.3f}  {c_bound:.3f}  "
              f"{got.get(('after_delivery', 'eddy', 'churn_auc'), np.nan):.3f}  "
              f"{got.get(('after_delivery', 'bgnbd', 'churn_auc'), np.nan):.3f}  "
              f"{got.get(('after_delivery', 'rfm', 'churn_auc'), np.nan):.3f}  "
              f"{c_bound - got.get(('after_delivery', 'bgnbd', 'churn_auc'), np.nan):+.3f}  {c_bound / c_oracle:.3f}x")
        if got:  # the same rows judged: the oracle's figures agree with the backtest's
            for key, mine in ((("at_order", "oracle", "edd_mae_days"), edd_oracle),
                              (("after_delivery", "oracle", "churn_auc"), c_oracle)):
                if key in got and abs(got[key] - mine) > CHECK_TOLERANCE:
                    print(f"  note: the table's {key[1]} {key[2]} is {got[key]:.4f}, here {mine:.4f}: not the same rows")


def _from_table(table: pd.DataFrame | None, cut: pd.Timestamp) -> dict:
    if table is None:
        return {}
    t = table[table.cutoff == cut]
    return {(r.moment, r.model, r.metric): float(r.value) for r in t.itertuples()}


if __name__ == "__main__":
    main()
