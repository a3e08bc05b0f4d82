"""The figure registry: every paper figure is an entry with the paper's names for its variants,
and each comparison with the paper is checked on summary rows whose answer is worked out by hand."""
import pytest

from experiments.figures import (ALLOCATION_NAMES, FIGURES, SCHEME_NAMES, compare_with_paper, get_figure, pct)


def row(variant, policy="search", **metrics):
    base = {"utility": 1.0, "quality": 1.0, "delay": 1.0, "energy": 1.0}
    return {"policy": policy, "name": "search reference", "variant": variant, **base, **metrics}


def test_registry_holds_figures_10_to_17():
    assert FIGURES.names == tuple(str(n) for n in range(10, 18))
    with pytest.raises(ValueError, match="allowed: 10, 11, 12, 13, 14, 15, 16, 17"):
        get_figure(9)


@pytest.mark.parametrize("number, expected", [
    (10, ["HIS", "PPGFIS", "CFIS", "IIS"]),
    (12, ["HIS (SIM+NPI)", "HIS w/o SIM+NPI"]),
    (16, ["KKT", "user-wise equal", "cluster-wise equal"]),
    (17, ["w_q × 0.25", "w_q × 0.5", "w_q × 1", "w_q × 2", "w_q × 4"]),
])
def test_variants_carry_the_papers_names(number, expected):
    variants = get_figure(number).variants({"num_ues": 50, "reward": {"quality_weight": 10.0}})
    assert [v.display for v in variants] == expected


def test_variant_overrides_name_the_env_keys():
    fig10 = get_figure(10).variants({})
    assert [v.overrides for v in fig10] == [{"scheme.name": s} for s in ("his", "ppgfis", "cfis", "iis")]
    fig13 = get_figure(13).variants({"num_ues": 4})
    assert [v.x for v in fig13] == [1, 2, 3, 4]  # no more clusters than UEs
    fig17 = get_figure(17).variants({"reward": {"quality_weight": 8.0}})
    assert [v.overrides["reward.quality_weight"] for v in fig17] == [2.0, 4.0, 8.0, 16.0, 32.0]
    fig11 = get_figure(11).variants({})
    assert len(fig11) == 2 * 5 * 4 and {v.group for v in fig11} == {f"{p}/{s}" for p in ("es", "ue") for s in SCHEME_NAMES}


def test_fig10_gain_and_ordering():
    rows = {s: row(s, utility=u) for s, u in (("his", 13.68), ("ppgfis", 10.0), ("cfis", 9.06), ("iis", 4.0))}
    (line,) = get_figure(10).compare(rows)
    assert "vs PPGFIS: +36.8 % (paper +36.8 %)" in line  # 13.68 / 10 - 1
    assert "vs CFIS: +51.0 % (paper +51.0 %)" in line  # 13.68 / 9.06 - 1 = 0.5099
    assert "vs IIS: +242.0 % (paper +94.3 %)" in line
    assert "Ordering: HIS > PPGFIS > CFIS > IIS" in line


def test_fig13_compares_the_shape():
    fig = get_figure(13)
    interior = {f"M={m}": {**row(f"M={m}", utility=u, delay=t, energy=e), "x": m}
                for m, u, t, e in ((1, 5.0, 30.0, 9.0), (3, 7.0, 20.0, 6.0), (8, 6.0, 25.0, 8.0))}
    shape, costs = fig.compare(interior)
    assert "U peaks at M = 3 (U 7;" in shape and shape.endswith("same shape: yes")
    assert "T 30 vs 20 s (yes), E 9 vs 6 J (yes)" in costs
    edge = {k: {**r, "utility": r["x"]} for k, r in interior.items()}  # U rising all the way: peak at M = 8
    shape, _ = fig.compare(edge)
    assert "U peaks at M = 8" in shape and shape.endswith("same shape: no")


def test_fig16_names_the_best_allocation_per_metric():
    rows = {"kkt": row("kkt", utility=8.0, delay=10.0, energy=5.0),
            "user_equal": row("user_equal", utility=7.0, delay=9.0, energy=6.0),
            "cluster_equal": row("cluster_equal", utility=7.5, delay=11.0, energy=4.0)}
    (line,) = get_figure(16).compare(rows)
    assert line.startswith("highest U: KKT, lowest T: user-wise equal, lowest E: cluster-wise equal")
    assert "paper: KKT in all three" in line and "0.26" in line
    assert set(ALLOCATION_NAMES.values()) == {"KKT", "user-wise equal", "cluster-wise equal"}


def test_fig17_rising_check():
    rows = {f"w{x}": {**row(f"w{x}", quality=q, delay=t, energy=e), "x": x}
            for x, q, t, e in ((1, 1.0, 5.0, 3.0), (2, 2.0, 5.0, 2.0), (4, 3.0, 6.0, 4.0))}
    (line,) = get_figure(17).compare(rows)
    assert "Q yes, T yes, E no" in line  # E dips from 3 to 2


def test_fig11_fig12_fig14():
    rows = {}
    for panel, lo, hi in (("es", 700, 1674), ("ue", 44, 84)):
        rows[f"his@{panel}={lo}"] = {**row("a", utility=8.0), "group": f"{panel}/his", "x": lo}
        rows[f"his@{panel}={hi}"] = {**row("b", utility=10.0), "group": f"{panel}/his", "x": hi}
    es, ue = get_figure(11).compare(rows)
    assert "ES SM budget: HIS 20.0 % (paper 18.7 %)" in es and "UE SMs: HIS 20.0 % (paper 9.0 %)" in ue
    (line,) = get_figure(12).compare({"sim_npi": row("sim_npi", utility=11.91), "no_sim_npi": row("n", utility=10.0)})
    assert line == "SIM+NPI utility gain +19.1 % (paper +19.1 %)"
    sims = {"semantic": 0.7, "entity": 0.72, "random": 0.5}
    (line,) = get_figure(14).compare({k: row(k, public_personal_similarity=v) for k, v in sims.items()})
    assert "similarity 0.700 (paper 0.65); highest among the strategies: no" in line


def test_compare_with_paper_prefixes_each_policy():
    summary = [row(s, policy=p, utility=u) | {"name": n}
               for p, n, u in (("search", "search reference", 2.0), ("trained:ippo", "IPPO (difference reward)", 1.0))
               for s in ("his", "iis")]
    lines = compare_with_paper(get_figure(10), summary)
    assert [line.split(":")[0] for line in lines] == ["search reference", "IPPO (difference reward)"]
    assert pct(3.0, 2.0) == 50.0 and pct(1.0, 0.0) != pct(1.0, 0.0)  # nan for a zero base
