"""``python -m dataplatform.pricing emr-serverless ... | launch LAUNCH_ID [--write]``.

``emr-serverless`` prices a capacity for a duration (reference 06's calculation):
``--vcpu 404 --memory-gb 1616 --storage-gb 18000 --hours 0.82 --arch x86_64 --region us-east-1`` prints
each dimension and the total to the cent. ``--storage-gb`` is the billable storage; with ``--workers N`` it
is the total configured and 20 GB per worker are free.

``launch`` collects and prices one workflow launch from ``pricing.launches_table`` and prints each
resource's cost; ``--write`` also writes the cost back as the DAG does (only while it has none).

Prices come from ``pricing.source`` in the config (``snapshot`` locally: no AWS call for
``emr-serverless``); ``--source`` overrides it. AWS clients come from the Airflow connection
(``aws_default``), as in the tasks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation


def _pricing_settings(source: str | None):
    from dataplatform.config import settings

    config = settings().pricing
    return config.model_copy(update={"source": source}) if source else config


def _pricer(source: str | None):
    from dataplatform import aws
    from dataplatform.pricing.pricer import Pricer

    return Pricer(_pricing_settings(source), aws.client_in, aws.client("dynamodb"))


def _aws_client_in(service: str, region: str):
    # Imported on use: the snapshot source needs no AWS client (and no Airflow import).
    from dataplatform import aws

    return aws.client_in(service, region)


def emr_serverless_command(args: argparse.Namespace) -> int:
    from dataplatform.pricing.costs import EmrServerlessUsage, cents, emr_serverless_cost, money
    from dataplatform.pricing.pricer import price_catalog
    from dataplatform.pricing.prices import emr_serverless_key

    catalog = price_catalog(_pricing_settings(args.source), _aws_client_in)
    usage = EmrServerlessUsage.from_capacity(
        args.vcpu, args.memory_gb, args.storage_gb, args.hours, args.arch, workers=args.workers
    )
    cost = emr_serverless_cost(usage, catalog, args.region)
    rows = (
        ("vCPU", args.vcpu, "vCPU", usage.vcpu_hours, "vcpu", cost.vcpu_cost),
        ("memory", args.memory_gb, "GB", usage.memory_gb_hours, "memory", cost.memory_cost),
        (
            "storage",
            usage.storage_gb_hours / args.hours if args.hours else 0,
            "GB",
            usage.storage_gb_hours,
            "storage",
            cost.storage_cost,
        ),
    )
    print(f"EMR Serverless {args.region} {args.arch}, {args.hours} h ({catalog.source})")
    for label, amount, unit, hours, dimension, component in rows:
        rate = catalog.price(emr_serverless_key(args.arch, dimension, args.region))
        print(
            f"  {label:<8} {amount:f} {unit} x {args.hours} h = {hours.normalize():f} {rate.unit} "
            f"x {rate.usd.normalize():f} USD = {money(component)} USD"
        )
    print(f"  total    {money(cost.total_cost)} USD = {cents(cost.total_cost)} USD")
    return 0


def launch_command(args: argparse.Namespace) -> int:
    from dataplatform.pricing import launches
    from dataplatform.pricing.resources import PricingError

    pricer = _pricer(args.source)
    table = pricer.settings.launches_table
    launch = launches.get_launch(pricer.dynamodb, table, args.launch_id)
    if launch is None:
        print(f"no launch {args.launch_id!r} in {table}", file=sys.stderr)
        return 2
    try:
        usage, cost = pricer.price(launch)
    except PricingError as exc:
        print(f"cannot price launch {args.launch_id}: {exc}", file=sys.stderr)
        return 1
    print(
        f"launch {args.launch_id} ({launch.get('workflow_type')}, {launch.get('status')}) in {usage.region}, "
        f"{usage.interval.start.isoformat()} .. {usage.interval.end.isoformat()} ({pricer.source})"
    )
    for line in cost.lines:
        print(f"  {line.component:<10} {line.resource_id:<24} {line.description:<40} {line.cost:.4f} USD")
    for name, value in cost.attributes().items():
        print(f"  {name:<16} {value}")
    if "total_cost" in launch:
        print(f"  stored total_cost {launch['total_cost']} (priced at {launch.get('priced_at')})")
    if args.write:
        outcome = pricer.price_and_record(args.launch_id)
        print(json.dumps(outcome, default=str))
    return 0


def _decimal(value: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 0 or not number.is_finite():
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {value!r}")
    return number


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m dataplatform.pricing", description=__doc__.split("\n")[0])
    root.add_argument("--source", choices=("snapshot", "price_list"), help="override pricing.source")
    commands = root.add_subparsers(dest="command", required=True)
    serverless = commands.add_parser("emr-serverless", help="price an EMR Serverless capacity for a duration")
    serverless.add_argument("--vcpu", type=_decimal, required=True, help="total vCPUs of all workers")
    serverless.add_argument(
        "--memory-gb", type=_decimal, required=True, help="total memory GB of all workers"
    )
    serverless.add_argument(
        "--storage-gb", type=_decimal, default=Decimal(0), help="billable ephemeral storage GB"
    )
    serverless.add_argument(
        "--workers", type=int, default=0, help="workers: --storage-gb is then the total, 20 GB each free"
    )
    serverless.add_argument("--hours", type=_decimal, required=True)
    serverless.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64")
    serverless.add_argument("--region", default="us-east-1")
    serverless.set_defaults(run=emr_serverless_command)
    launch = commands.add_parser("launch", help="price one workflow launch")
    launch.add_argument("launch_id")
    launch.add_argument("--write", action="store_true", help="write the cost back (only while it has none)")
    launch.set_defaults(run=launch_command)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
