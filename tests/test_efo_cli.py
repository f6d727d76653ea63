"""``kinesis-eo efo register|list|deregister`` on kinesis-mock, and ``run --efo``'s setting."""

from __future__ import annotations

from typing import Any

import pytest

from kinesis_eo import runner
from kinesis_eo.cli import EXIT_FAILED, EXIT_OK, build_parser, main
from kinesis_eo.leases import LeaseConfig
from tests.streams import new_stream


@pytest.mark.kinesis_mock
def test_efo_register_list_and_deregister_a_consumer(
    kinesis_mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = new_stream(kinesis_mock.client(), 1)
    aws = ["--stream", stream, "--endpoint-url", kinesis_mock.endpoint_url, "--region", "us-east-1"]
    assert main(["efo", "register", "--name", "billing", *aws]) == EXIT_OK
    arn = capsys.readouterr().out.strip()
    assert arn.startswith("arn:aws:kinesis:")
    assert "/consumer/billing:" in arn
    assert main(["efo", "register", "--name", "billing", *aws]) == EXIT_OK
    assert capsys.readouterr().out.strip() == arn
    assert main(["efo", "list", *aws]) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == [f"billing\tACTIVE\t{arn}"]
    assert main(["efo", "deregister", "--name", "billing", *aws]) == EXIT_OK
    assert main(["efo", "deregister", "--name", "billing", *aws]) == EXIT_FAILED
    capsys.readouterr()
    assert main(["efo", "list", *aws]) == EXIT_OK
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("flags", "consumer"),
    [([], None), (["--efo"], "orders"), (["--efo", "fast-lane"], "fast-lane")],
)
def test_run_efo_names_the_consumer_the_worker_reads_through(
    flags: list[str], consumer: str | None
) -> None:
    args = build_parser().parse_args(
        ["run", "--stream", "s", "--app", "orders", "--handler", "m:f", *flags]
    )
    options = runner.RunOptions(stream="s", app="orders", handler="m:f", efo=args.efo)
    config = runner.worker_config(options, LeaseConfig("orders-leases"))
    assert config.efo_consumer == consumer
