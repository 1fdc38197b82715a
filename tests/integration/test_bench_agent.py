"""`neocloud bench agent` runs a real agent process against a real scheduler and measures it."""

from __future__ import annotations

from neocloud.bench.agent import run


def test_bench_agent_measures_a_running_agent() -> None:
    result = run(seconds=1.5, warmup_s=1.0, scrape_interval_s=0.5)
    assert result["benchmark"] == "agent"
    assert result["metrics_scrapes"] >= 2
    assert result["batches_acked_by_scheduler"] >= 0
    assert 0 <= result["agent_cpu_percent"] < 100
