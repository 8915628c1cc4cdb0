"""``python -m dataplatform.pricing emr-serverless ... | launch LAUNCH_ID [--write]``.

``emr-serverless`` prices a capacity for a duration (reference 06's calculation):
``--vcpu 404 --memory-gb 1616 --storage-gb 18000 --hours 0.82 --arch x86_64 --region us-east-1`` prints
each dimension and the total to the cent. ``--storage-gb`` is the billable storage; with ``--workers N`` it
is the total configured and 20 GB per worker are free. ``--vcpu``, ``--memory-gb`` and ``--hours`` must be
positive, ``--storage-gb`` and ``--workers`` at least 0 (argparse refuses anything else, naming the
argument); a region without a price ends in one line on standard error naming the price, exit 1.

``launch`` collects and prices one workflow launch from ``pricing.launches_table`` and prints each
resource's cost; ``--write`` also writes the cost back as the DAG does (only while it has none).

Prices come from ``pricing.source`` in the config (``snapshot`` locally: no AWS call for
``emr-serverless``); ``--source`` overrides it. AWS clients come from the Airflow connection
(``aws_default``), as in the tasks. ``--json`` prints either command's result as one JSON document.
Standard output carries only the result; logs and errors go to standard error (``dataplatform.cli``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

from dataplatform import cli
from dataplatform.dynamodb import table_must_exist


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


def emr_serverless_command(out: cli.Output, args: argparse.Namespace) -> int:
    from dataplatform.pricing.costs import EmrServerlessUsage, cents, emr_serverless_cost, money
    from dataplatform.pricing.pricer import price_catalog
    from dataplatform.pricing.prices import emr_serverless_key
    from dataplatform.pricing.resources import PricingError

    catalog = price_catalog(_pricing_settings(args.source), _aws_client_in)
    usage = EmrServerlessUsage.from_capacity(
        args.vcpu, args.memory_gb, args.storage_gb, args.hours, args.arch, workers=args.workers
    )
    try:
        cost = emr_serverless_cost(usage, catalog, args.region)
    except PricingError as exc:
        raise cli.CommandError(str(exc)) from exc  # names the price key and the region
    rows = (
        ("vcpu", args.vcpu, "vCPU", usage.vcpu_hours, cost.vcpu_cost),
        ("memory", args.memory_gb, "GB", usage.memory_gb_hours, cost.memory_cost),
        ("storage", usage.storage_gb_hours / args.hours, "GB", usage.storage_gb_hours, cost.storage_cost),
    )
    dimensions = []
    for dimension, amount, unit, hours, component in rows:
        rate = catalog.price(emr_serverless_key(args.arch, dimension, args.region))
        dimensions.append(
            {
                "dimension": dimension,
                "amount": f"{amount.normalize():f}",
                "unit": unit,
                "usage": f"{hours.normalize():f}",
                "usage_unit": rate.unit,
                "usd_per_unit": f"{rate.usd.normalize():f}",
                "cost": money(component),
            }
        )
    if args.json:
        out.json(
            {
                "region": args.region,
                "architecture": args.arch,
                "hours": f"{args.hours.normalize():f}",
                "source": catalog.source,
                "dimensions": dimensions,
                "total_cost": money(cost.total_cost),
                "total_usd": cents(cost.total_cost),
            }
        )
        return 0
    out.line(f"EMR Serverless {args.region} {args.arch}, {args.hours} h ({catalog.source})")
    labels = {"vcpu": "vCPU", "memory": "memory", "storage": "storage"}
    for row in dimensions:
        out.line(
            f"  {labels[row['dimension']]:<8} {row['amount']} {row['unit']} x {args.hours} h = {row['usage']} "
            f"{row['usage_unit']} x {row['usd_per_unit']} USD = {row['cost']} USD"
        )
    out.line(f"  total    {money(cost.total_cost)} USD = {cents(cost.total_cost)} USD")
    return 0


def launch_command(out: cli.Output, args: argparse.Namespace) -> int:
    from dataplatform.pricing import launches
    from dataplatform.pricing.resources import PricingError

    try:
        launches.check_launch_id(args.launch_id)
    except launches.LaunchRecordError as exc:
        raise cli.CommandError(f"refused: {exc}", exit_code=2) from None
    pricer = _pricer(args.source)
    table = pricer.settings.launches_table
    with table_must_exist(table, launches.CREATED_BY):
        launch = launches.get_launch(pricer.dynamodb, table, args.launch_id)
    if launch is None:
        raise cli.CommandError(f"no launch {args.launch_id!r} in {table}", exit_code=2)
    try:
        usage, cost = pricer.price(launch)
        written = pricer.price_and_record(args.launch_id) if args.write else None
    except PricingError as exc:
        raise cli.CommandError(f"cannot price launch {args.launch_id}: {exc}") from exc
    lines = [
        {"component": line.component, "resource_id": line.resource_id, "description": line.description,
         "cost": f"{line.cost:.4f}"}
        for line in cost.lines
    ]  # fmt: skip
    stored = (
        {"total_cost": launch["total_cost"], "priced_at": launch.get("priced_at")}
        if "total_cost" in launch
        else None
    )
    if args.json:
        out.json(
            {
                "launch_id": args.launch_id,
                "workflow_type": launch.get("workflow_type"),
                "status": launch.get("status"),
                "region": usage.region,
                "start": usage.interval.start.isoformat(),
                "end": usage.interval.end.isoformat(),
                "source": pricer.source,
                "lines": lines,
                "cost": cost.attributes(),
                "stored": stored,
                "written": written,
            }
        )
        return 0
    out.line(
        f"launch {args.launch_id} ({launch.get('workflow_type')}, {launch.get('status')}) in {usage.region}, "
        f"{usage.interval.start.isoformat()} .. {usage.interval.end.isoformat()} ({pricer.source})"
    )
    for line in lines:
        out.line(
            f"  {line['component']:<10} {line['resource_id']:<24} {line['description']:<40} {line['cost']} USD"
        )
    for name, value in cost.attributes().items():
        out.line(f"  {name:<16} {value}")
    if stored:
        out.line(f"  stored total_cost {stored['total_cost']} (priced at {stored['priced_at']})")
    if written is not None:
        out.line(f"  written: {written['outcome']}")
    return 0


# Far above any capacity or duration priced (404 vCPU for 0.82 h is the reference's case), and far below
# what would overflow the decimal context of the cost arithmetic (1e999999999 did).
MAX_AMOUNT = 10**9


def _number(minimum: Decimal, inclusive: bool, integer: bool = False) -> Callable[[str], Decimal | int]:
    """An argparse ``type``: a finite number above ``minimum`` (or at least ``minimum`` when
    ``inclusive``) and below ``MAX_AMOUNT``. argparse prefixes the message with the argument's name."""
    bound = f">= {minimum}" if inclusive else f"> {minimum}"
    kind = "a whole number" if integer else "a number"

    def parse(value: str) -> Decimal | int:
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if not number.is_finite() or (integer and number != number.to_integral_value()):
            raise argparse.ArgumentTypeError(f"must be {kind} {bound}, got {value!r}")
        if number >= MAX_AMOUNT:
            raise argparse.ArgumentTypeError(f"must be below {MAX_AMOUNT:,}, got {value!r}")
        if number < minimum or (number == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {kind} {bound}, got {value!r}")
        return int(number) if integer else number

    return parse


def _region(value: str) -> str:
    """An argparse ``type``: an AWS region name (it becomes part of every price key)."""
    from dataplatform.config import is_region

    if not is_region(value):
        raise argparse.ArgumentTypeError(f"not an AWS region name such as us-east-1: {value!r}")
    return value


_positive = _number(Decimal(0), inclusive=False)
_at_least_zero = _number(Decimal(0), inclusive=True)
_whole_at_least_zero = _number(Decimal(0), inclusive=True, integer=True)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m dataplatform.pricing", description=__doc__.split("\n")[0])
    root.add_argument("--source", choices=("snapshot", "price_list"), help="override pricing.source")
    commands = root.add_subparsers(dest="command", required=True)
    serverless = commands.add_parser("emr-serverless", help="price an EMR Serverless capacity for a duration")
    serverless.add_argument("--vcpu", type=_positive, required=True, help="total vCPUs of all workers (> 0)")
    serverless.add_argument(
        "--memory-gb", type=_positive, required=True, help="total memory GB of all workers (> 0)"
    )
    serverless.add_argument(
        "--storage-gb", type=_at_least_zero, default=Decimal(0), help="billable ephemeral storage GB (>= 0)"
    )
    serverless.add_argument(
        "--workers",
        type=_whole_at_least_zero,
        default=0,
        help="workers (>= 0): --storage-gb is then the total, 20 GB each free",
    )
    serverless.add_argument("--hours", type=_positive, required=True, help="how long (> 0)")
    serverless.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64")
    serverless.add_argument("--region", type=_region, default="us-east-1")
    serverless.add_argument("--json", action="store_true", help="the result as one JSON document")
    serverless.set_defaults(run=emr_serverless_command)
    launch = commands.add_parser("launch", help="price one workflow launch")
    launch.add_argument("launch_id")
    launch.add_argument("--write", action="store_true", help="write the cost back (only while it has none)")
    launch.add_argument("--json", action="store_true", help="the result as one JSON document")
    launch.set_defaults(run=launch_command)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return cli.run(lambda out: args.run(out, args))


if __name__ == "__main__":
    sys.exit(main())
