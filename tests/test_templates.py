"""Both templates deployed into moto's CloudFormation, and the product run on the stacks' resources.

cfn-lint checks the templates against CloudFormation, checkov against security rules; only
this checks them against the code: a flag renamed in the CLI, an environment variable the
sample no longer reads, an output that names the wrong resource, and these tests fail.

What moto's CloudFormation deploys: every resource type of both templates (Kinesis stream,
DynamoDB tables, SQS queues, log groups, IAM roles, ECS cluster, task definition and service,
security group, Lambda function and event source mapping) except ``AWS::CloudWatch::Alarm``,
which it skips with a warning: the alarms are checked here against the template instead.
moto stores what it deploys but runs nothing, and does not enforce IAM policies. So the
tests bridge, and only this:

- the ECS task: the deployed task definition's ``entryPoint`` + ``command``, read back through
  moto's ECS API, run as ``desiredCount`` processes (the service's, read back too), each with
  the task's scratch volume mapped to a folder of its own, and ``--endpoint-url`` added (the
  one argument not in the template) so the calls reach moto;
- the Lambda runtime: the function's ``Handler`` is imported from ``samples/`` (the zip in S3
  holds the same file), with the deployed function's environment plus ``AWS_ENDPOINT_URL``;
  ``kinesis_eo.testing.lambda_esm`` plays the deployed event source mapping (its batch size,
  bisection, retries and parallelization read back from moto's Lambda API). moto's own
  mapping would run the function in docker on every put after it exists, which is not
  available here: the records go into the stream before the function's stack is deployed;
- the VPC and subnet the worker template takes as parameters are made in moto's EC2.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kinesis_eo import cli
from kinesis_eo.deadletter import reassemble
from kinesis_eo.metrics.catalogue import CATALOGUE
from kinesis_eo.producer import Event, Producer
from kinesis_eo.testing.backends import MotoServer
from kinesis_eo.testing.lambda_esm import EsmConfig, EventSourceMapping, read_stream
from tests.handlers import EFFECTS_TABLE_ENV
from tests.helpers import produce
from tests.workers import wait_for

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
SAMPLES = REPO / "samples"

# moto skips the alarms, with this warning; the suite turns warnings into errors.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS..CloudWatch..Alarm")


# --- deploying ----------------------------------------------------------------------------------


def deploy(server: MotoServer, template: str, name: str, **parameters: str) -> dict[str, str]:
    """Create the stack ``name`` from ``infra/<template>``; its outputs, once CREATE_COMPLETE."""
    cloudformation = server.client("cloudformation")
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=(INFRA / template).read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    (stack,) = cloudformation.describe_stacks(StackName=name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def physical_id(server: MotoServer, stack: str, logical_id: str) -> str:
    resource = server.client("cloudformation").describe_stack_resource(
        StackName=stack, LogicalResourceId=logical_id
    )["StackResourceDetail"]
    physical: str = resource["PhysicalResourceId"]
    return physical


def deploy_worker(server: MotoServer, **parameters: str) -> tuple[str, dict[str, str]]:
    """The worker stack, with a network made for it; its name and outputs."""
    ec2 = server.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    name = f"worker-{uuid.uuid4().hex[:8]}"
    outputs = deploy(
        server,
        "worker.yaml",
        name,
        ImageUri="kinesis-eo:test",
        AppName=name,
        VpcId=vpc,
        Subnets=subnet,
        **parameters,
    )
    return name, outputs


def create_effects_table(server: MotoServer, name: str) -> None:
    # The transactional sink's table: the worker template names it, and does not create it.
    server.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def applied(server: MotoServer, table: str) -> dict[str, int]:
    items = server.client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
    return {i["id"]["S"]: int(i["applied"]["N"]) for i in items}


# --- (a) the ECS task's command -----------------------------------------------------------------


def mounted(container: dict[str, Any], volumes: dict[str, Path], args: list[str]) -> list[str]:
    """``args`` with paths under the container's mount points moved to ``volumes``' folders."""
    mounts = {m["containerPath"]: volumes[m["sourceVolume"]] for m in container["mountPoints"]}

    def mapped(argument: str) -> str:
        for container_path, folder in mounts.items():
            if argument.startswith(container_path + "/"):
                return str(folder / argument[len(container_path) + 1 :])
        return argument

    return [mapped(a) for a in args]


def task_argv(container: dict[str, Any], volumes: dict[str, Path]) -> list[str]:
    """The container's entry point and command, its mount points moved to ``volumes``."""
    assert container["entryPoint"] == ["kinesis-eo"]
    # The console script of this environment is what `pip install .` puts on PATH in the image.
    script = Path(sys.executable).with_name("kinesis-eo")
    program = [str(script)] if script.exists() else [sys.executable, "-m", "kinesis_eo.cli"]
    # moto renders an `!If [..., !Ref AWS::NoValue]` list element as null where CloudFormation
    # drops the element: drop it here, the one deviation bridged.
    command = [argument for argument in container["command"] if argument is not None]
    return program + mounted(container, volumes, command)


def task_environment(effects_table: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    env[EFFECTS_TABLE_ENV] = effects_table
    return env


@pytest.fixture
def tasks() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started task processes, killed if a test leaves one running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_the_task_definitions_command_consumes_the_stacks_stream_exactly_once(
    moto_server: MotoServer,
    tasks: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    effects = f"effects-{uuid.uuid4().hex[:8]}"
    create_effects_table(moto_server, effects)
    stack, outputs = deploy_worker(
        moto_server, Handler="tests.handlers:count_effect", SinkTableName=effects
    )
    ecs = moto_server.client("ecs")
    definition = ecs.describe_task_definition(
        taskDefinition=physical_id(moto_server, stack, "TaskDefinition")
    )["taskDefinition"]
    (container,) = definition["containerDefinitions"]
    (service,) = ecs.describe_services(
        cluster=outputs["ClusterName"], services=[outputs["ServiceName"]]
    )["services"]
    assert service["taskDefinition"] == definition["taskDefinitionArn"]
    assert service["desiredCount"] == 2

    def start_task(number: int) -> tuple[subprocess.Popen[bytes], list[str], Path]:
        # Each task gets its scratch volume empty, as ECS does; the worker makes the folder.
        folder = tmp_path / f"task-{number}"
        volumes = {v["name"]: folder / v["name"] for v in definition["volumes"]}
        argv = [*task_argv(container, volumes), "--endpoint-url", moto_server.endpoint_url]
        log = tmp_path / f"task-{number}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=task_environment(effects),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        tasks.append(process)
        health = mounted(container, volumes, container["healthCheck"]["command"])
        return process, health, log

    def running(started: list[tuple[subprocess.Popen[bytes], list[str], Path]]) -> bool:
        # A command the CLI refuses exits at once (2, one line): say so, not a timeout later.
        for process, _, log in started:
            code = process.poll()
            assert code is None, f"the task exited {code}:\n{log.read_text(errors='replace')}"
        return True

    def healthy(health: list[str]) -> bool:
        # The container's health check, on the file the task keeps in its scratch volume.
        assert health[:2] == ["CMD", "kinesis-eo"]
        return cli.main(health[2:]) == 0

    def stop(process: subprocess.Popen[bytes], log: Path) -> None:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        assert code == 0, log.read_text(errors="replace")

    kinesis = moto_server.client("kinesis")
    stream = outputs["StreamName"]
    first = [start_task(n) for n in range(service["desiredCount"])]
    ids = produce(kinesis, stream, 120)
    wait_for(
        lambda: running(first) and len(applied(moto_server, effects)) == 120,
        timeout=60,
        what="the tasks to apply 120 effects",
    )
    wait_for(
        lambda: running(first) and all(healthy(health) for _, health, _ in first),
        timeout=30,
        what="every task's health check to pass",
    )
    for process, _, log in first:
        stop(process, log)

    # A task started later (a deployment, a replaced task) resumes from the checkpoints.
    later_task = start_task(len(first))
    later, _, later_log = later_task
    ids += produce(kinesis, stream, 30, start=120)
    wait_for(
        lambda: running([later_task]) and len(applied(moto_server, effects)) == 150,
        timeout=60,
        what="the later task to apply 30 more effects",
    )
    stop(later, later_log)

    assert applied(moto_server, effects) == dict.fromkeys(ids, 1)
    leases = moto_server.client("dynamodb").scan(TableName=outputs["LeaseTableName"])["Items"]
    assert len(leases) == 2  # the stack's ShardCount, in the stack's lease table
    dead = moto_server.client("sqs").get_queue_attributes(
        QueueUrl=outputs["DeadLetterQueueUrl"], AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert dead["Attributes"]["ApproximateNumberOfMessages"] == "0"

    # What awslogs would carry to the log group: the tasks' output, one event per line. Its EMF
    # documents are the metrics the dashboard and the alarms read, under the same names.
    logs = [log for _, _, log in [*first, later_task]]
    documents = [doc for log in logs for doc in emf_documents_in(log)]
    assert documents, "the tasks wrote no EMF document"
    read = dashboard_series(INFRA / "worker.yaml")
    published = Counter[str]()
    for document in documents:
        EMF_SCHEMA.validate(document)
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        (dimensions,) = directive["Dimensions"]
        assert document["app"] == stack  # deploy_worker's AppName
        for metric in directive["Metrics"]:
            name = metric["Name"]
            assert frozenset(dimensions) == expected_dimensions(name), name
            value = document[name]
            published[name] += sum(value) if isinstance(value, list) else value
            if name in read:
                assert read[name] == frozenset(dimensions), name
    assert published["records_applied"] == 150  # each effect once, across three tasks
    assert published["records_read"] >= 150


# --- (b) the Lambda function's handler ----------------------------------------------------------


def code_zip(module: str) -> bytes:
    """A zip with the handler's module at its root (what the template's comment packages)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(SAMPLES / f"{module}.py", f"{module}.py")
    return buffer.getvalue()


def load_handler(handler: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``module.function`` as the Lambda runtime resolves it, from samples/."""
    module_name, function = handler.rsplit(".", 1)
    monkeypatch.syspath_prepend(str(SAMPLES))
    module = importlib.import_module(module_name)
    entry: Callable[..., Any] = getattr(module, function)
    return entry


def test_the_functions_handler_with_its_deployed_environment_applies_each_order_once(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, worker = deploy_worker(moto_server, Handler="tests.handlers:count_effect")
    # Put before the function's stack exists: moto's own mapping runs the function in docker
    # on each put once it exists. The mapping starts at TRIM_HORIZON, so it delivers these.
    orders = [
        Event(json.dumps({"account": f"acct-{i % 3}", "amount": 10}).encode(), f"k-{i}", f"o-{i}")
        for i in range(30)
    ]
    orders.insert(7, Event(b"not an order", "k-bad", "o-bad"))
    kinesis = moto_server.client("kinesis")
    Producer(kinesis, worker["StreamName"]).put(orders)

    s3 = moto_server.client("s3")
    bucket = f"code-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="function.zip", Body=code_zip("lambda_orders"))
    stack = f"orders-{uuid.uuid4().hex[:8]}"
    outputs = deploy(
        moto_server,
        "lambda.yaml",
        stack,
        StreamName=worker["StreamName"],
        CodeBucket=bucket,
        CodeKey="function.zip",
        BatchSize="10",
    )

    lambda_ = moto_server.client("lambda")
    function = lambda_.get_function_configuration(FunctionName=outputs["FunctionArn"])
    mapping = lambda_.get_event_source_mapping(UUID=outputs["EventSourceMappingId"])
    assert mapping["FunctionArn"] == function["FunctionArn"]
    # The safe defaults: the mapping never skips a batch; the function dead-letters.
    assert mapping["MaximumRetryAttempts"] == -1
    assert mapping["MaximumRecordAgeInSeconds"] == -1
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    stream = mapping["EventSourceArn"].rsplit("/", 1)[1]
    assert stream == worker["StreamName"]

    # The function's environment as Lambda hands it over (strings; moto keeps numbers).
    for key, value in function["Environment"]["Variables"].items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    handler = load_handler(function["Handler"], monkeypatch)
    entry_point = sys.modules[handler.__module__]._entry_point
    entry_point.cache_clear()  # clients and tables of an earlier test must not be reused

    stored = read_stream(kinesis, stream)
    assert len(stored) == len(orders)
    config = EsmConfig(
        batch_size=mapping["BatchSize"],
        bisect_on_function_error=mapping["BisectBatchOnFunctionError"],
        maximum_retry_attempts=mapping["MaximumRetryAttempts"],
        parallelization_factor=mapping["ParallelizationFactor"],
    )
    try:
        for _ in range(2):  # the second pass redelivers everything: it changes nothing
            esm = EventSourceMapping(handler, stored, stream=stream, config=config)
            esm.run()
            assert esm.on_failure == []
    finally:
        entry_point.cache_clear()

    dynamodb = moto_server.client("dynamodb")
    balances = {
        i["account"]["S"]: int(i["balance"]["N"])
        for i in dynamodb.scan(TableName=outputs["BalancesTableName"])["Items"]
    }
    assert balances == {"acct-0": 100, "acct-1": 100, "acct-2": 100}
    assert dynamodb.scan(TableName=outputs["LedgerTableName"])["Count"] > 0
    messages = moto_server.client("sqs").receive_message(
        QueueUrl=outputs["DeadLetterQueueUrl"], MaxNumberOfMessages=10
    )["Messages"]
    assert [letter.record.data for letter in reassemble(messages)] == [b"not an order"]


# --- the alarms, which moto does not deploy -----------------------------------------------------


def load_template(path: Path) -> dict[str, Any]:
    """The template with its short-form tags (!Ref, !GetAtt, ...) as ``{tag: value}``."""

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node, deep=True)}
        return {suffix: loader.construct_mapping(node, deep=True)}

    Loader.add_multi_constructor("!", tagged)
    document: dict[str, Any] = yaml.load(path.read_text(), Loader=Loader)
    return document


_NO_VALUE = object()


def with_conditions(
    template: dict[str, Any], only: Collection[str] | None = None, **values: str
) -> dict[str, Any]:
    """``template`` as CloudFormation builds it for the parameter ``values`` (defaults elsewhere).

    Resources whose ``Condition`` is false are left out, ``!If`` on the conditions in ``only``
    (all when None) takes its branch, and ``AWS::NoValue`` drops what it stands in. Other
    ``!If``s, ``!Ref``s and ``!GetAtt``s stay as written, for the tests to compare.
    """
    parameters = {
        name: values.get(name, str(spec.get("Default", "")))
        for name, spec in template["Parameters"].items()
    }
    truths: dict[str, bool] = {}

    def operand(node: Any) -> str:
        return parameters[node["Ref"]] if isinstance(node, dict) else str(node)

    def holds(expression: dict[str, Any]) -> bool:
        ((function, arguments),) = expression.items()
        if function == "Condition":
            return truth(arguments)
        if function == "Equals":
            left, right = (operand(a) for a in arguments)
            return left == right
        results = [holds(a) for a in arguments]
        return {"Not": lambda: not results[0], "And": lambda: all(results)}.get(
            function, lambda: any(results)
        )()

    def truth(name: str) -> bool:
        if name not in truths:
            truths[name] = holds(template["Conditions"][name])
        return truths[name]

    def built(node: Any) -> Any:
        if isinstance(node, list):
            return [b for b in map(built, node) if b is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if node == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        if set(node) == {"If"}:
            condition, when_true, when_false = node["If"]
            if only is not None and condition not in only:
                return node
            return built(when_true if truth(condition) else when_false)
        return {k: b for k, b in ((k, built(v)) for k, v in node.items()) if b is not _NO_VALUE}

    resources = {
        name: resource
        for name, resource in template["Resources"].items()
        if "Condition" not in resource or truth(resource["Condition"])
    }
    return {**template, "Resources": built(resources)}


def alarms(template: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """(metric, the resource its dimension names) -> the properties of single-metric alarms."""
    found = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::CloudWatch::Alarm" or "Metrics" in resource["Properties"]:
            continue
        properties = resource["Properties"]
        (dimension,) = properties["Dimensions"]
        value = dimension["Value"]
        target = value["Ref"] if "Ref" in value else value["GetAtt"].split(".")[0]
        found[(properties["MetricName"], target)] = properties
    return found


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "lambda.yaml",
            {
                ("IteratorAge", "Function"),
                ("ApproximateNumberOfMessagesVisible", "DeadLetterQueue"),
                ("ApproximateAgeOfOldestMessage", "DeadLetterQueue"),
                ("ApproximateNumberOfMessagesVisible", "OnFailureQueue"),
                ("ApproximateAgeOfOldestMessage", "OnFailureQueue"),
            },
        ),
        (
            "worker.yaml",
            {
                ("GetRecords.IteratorAgeMilliseconds", "Stream"),
                ("ApproximateNumberOfMessagesVisible", "DeadLetterQueue"),
                ("ApproximateAgeOfOldestMessage", "DeadLetterQueue"),
            },
        ),
    ],
)
def test_alarms_watch_iterator_age_and_every_queue_and_notify_the_optional_topic(
    template: str, expected: set[tuple[str, str]]
) -> None:
    # Polling (the default): the stream's GetRecords iterator age.
    document = with_conditions(load_template(INFRA / template), only={"UseEfo"})
    found = alarms(document)
    assert set(found) == expected
    namespaces = {
        "IteratorAge": "AWS/Lambda",
        "GetRecords.IteratorAgeMilliseconds": "AWS/Kinesis",
        "ApproximateNumberOfMessagesVisible": "AWS/SQS",
        "ApproximateAgeOfOldestMessage": "AWS/SQS",
    }
    dimension_names = {"AWS/Lambda": "FunctionName", "AWS/Kinesis": "StreamName"}
    for (metric, _), properties in found.items():
        namespace = namespaces[metric]
        assert properties["Namespace"] == namespace
        (dimension,) = properties["Dimensions"]
        assert dimension["Name"] == dimension_names.get(namespace, "QueueName")
        notify = {"If": ["NotifyTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
        assert properties["AlarmActions"] == notify
        assert properties["OKActions"] == notify
    assert document["Parameters"]["AlarmTopicArn"]["Default"] == ""
    # A dead letter or a skipped batch needs a person at once.
    for (metric, _), properties in found.items():
        if metric == "ApproximateNumberOfMessagesVisible":
            assert properties["Threshold"] == 0
            assert properties["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_templates_mark_ttl_reaches_the_task_and_a_ttl_below_retention_is_refused(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    effects = f"effects-{uuid.uuid4().hex[:8]}"
    create_effects_table(moto_server, effects)
    stack, _ = deploy_worker(
        moto_server,
        Handler="tests.handlers:count_effect",
        SinkTableName=effects,
        LedgerMode="per-record",
        StreamRetentionHours="48",
        MarkTtlHours="24",
    )
    definition = moto_server.client("ecs").describe_task_definition(
        taskDefinition=physical_id(moto_server, stack, "TaskDefinition")
    )["taskDefinition"]
    (container,) = definition["containerDefinitions"]
    volumes = {v["name"]: tmp_path / v["name"] for v in definition["volumes"]}
    argv = [*task_argv(container, volumes), "--endpoint-url", moto_server.endpoint_url]
    assert argv[argv.index("--mark-ttl-hours") + 1] == "24"

    done = subprocess.run(
        argv, cwd=REPO, env=task_environment(effects), capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2, done.stderr
    # Log lines (JSON) may come first; the refusal is the one error line, last.
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("kinesis-eo: error: per-record marks expire after 24 h")
    assert "keeps records for 48 h" in line


# --- the dashboards and kinesis_eo's own alarms -------------------------------------------------

NAMESPACE = "KinesisEO"  # what `kinesis-eo run --metrics emf` publishes under by default
APP_PARAMETER = {"worker.yaml": "AppName", "lambda.yaml": "ConsumerGroup"}


def render_sub(text: str, template: dict[str, Any], **values: str) -> str:
    """``!Sub text`` as CloudFormation renders it, with the template's parameter defaults.

    ``${Parameter}`` takes ``values`` or the parameter's default, ``${Resource}`` and
    ``${Resource.Attribute}`` a stand-in naming the resource, ``${!Literal}`` stays ``${Literal}``.
    A name the template does not define fails the test, as it fails the deployment.
    """
    pseudo = {"AWS::Region": "eu-west-1", "AWS::StackName": "stack", "AWS::Partition": "aws"}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in values:
            return values[name]
        if name in pseudo:
            return pseudo[name]
        if name in template["Parameters"]:
            return str(template["Parameters"][name]["Default"])
        resource, _, attribute = name.partition(".")
        assert resource in template["Resources"], f"!Sub names {name}, which is not defined"
        return f"{resource}-{attribute}" if attribute else f"{resource}-id"

    return re.sub(r"\$\{([^}]+)\}", replace, text)


def dashboard_body(template_name: str, **values: str) -> dict[str, Any]:
    template = load_template(INFRA / template_name)
    (dashboard,) = [
        r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"
    ]
    body: dict[str, Any] = json.loads(
        render_sub(dashboard["Properties"]["DashboardBody"]["Sub"], template, **values)
    )
    return body


_SEARCH = re.compile(
    r"SEARCH\('\{([^}]*)\} MetricName=\"([^\"]+)\" app=\"([^\"]*)\"', '([^']+)', 60\)"
)


def kinesis_eo_series(body: dict[str, Any]) -> list[tuple[str, frozenset[str], str]]:
    """(metric, dimension names, app value) of every KinesisEO metric the widgets read."""
    found = []
    for widget in body["widgets"]:
        for line in widget["properties"]["metrics"]:
            if isinstance(line[0], dict):
                expression = line[0]["expression"]
                searches = _SEARCH.findall(expression)
                assert searches, f"an expression that reads no metric: {expression}"
                for schema, metric, app, _ in searches:
                    namespace, *dimensions = schema.split(",")
                    assert namespace == NAMESPACE
                    found.append((metric, frozenset(dimensions), app))
            elif line[0] == NAMESPACE:
                names = line[2:-1:2] if isinstance(line[-1], dict) else line[2::2]
                values = line[3::2]
                found.append((line[1], frozenset(names), values[names.index("app")]))
    return found


def expected_dimensions(metric: str) -> frozenset[str]:
    return frozenset({"app", *CATALOGUE[metric].dimensions})


def dashboard_series(template: Path) -> dict[str, frozenset[str]]:
    """Metric -> the dimension set the template's dashboard reads it under."""
    return {
        metric: dimensions
        for metric, dimensions, _ in kinesis_eo_series(dashboard_body(template.name))
    }


EMF_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((Path(__file__).parent / "emf_schema.json").read_text())
)


def emf_documents_in(log: Path) -> list[dict[str, Any]]:
    """The EMF documents among a process's output lines (log lines are JSON too)."""
    documents = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "_aws" in document:
            documents.append(document)
    return documents


@pytest.mark.parametrize("template", ["worker.yaml", "lambda.yaml"])
def test_dashboards_render_to_json_and_read_catalogue_metrics_under_their_exact_dimensions(
    template: str,
) -> None:
    body = dashboard_body(template, **{APP_PARAMETER[template]: "orders"})
    series = kinesis_eo_series(body)
    assert series
    for metric, dimensions, app in series:
        assert metric in CATALOGUE, f"{metric} is not in kinesis_eo.metrics.catalogue"
        # EMF publishes a metric under its exact dimension set only: any other set reads nothing.
        assert dimensions == expected_dimensions(metric), metric
        assert app == "orders"
    for widget in body["widgets"]:
        assert widget["properties"]["region"] == "eu-west-1"


@pytest.mark.parametrize(
    ("template", "wanted"),
    [
        (
            "worker.yaml",
            {
                "millis_behind_latest",
                "records_read",
                "records_applied",
                "duplicates_redelivered",
                "duplicates_inbound",
                "dead_lettered",
                "fenced_commits",
                "leases_taken",
                "leases_stolen",
                "leases_released",
                "leases_held",
                "handler_errors",
                "outage_pauses",
                "throttles",
            },
        ),
        (
            "lambda.yaml",
            {
                "records_read",
                "records_applied",
                "duplicates_redelivered",
                "duplicates_inbound",
                "dead_lettered",
                "handler_errors",
                "outage_pauses",
                "throttles",
            },
        ),
    ],
)
def test_dashboards_show_lag_throughput_duplicates_dead_letters_leases_and_errors(
    template: str, wanted: set[str]
) -> None:
    body = dashboard_body(template)
    assert wanted <= {metric for metric, _, _ in kinesis_eo_series(body)}
    aws_metrics = {
        (line[0], line[1])
        for widget in body["widgets"]
        for line in widget["properties"]["metrics"]
        if isinstance(line[0], str) and line[0] != NAMESPACE
    }
    # Lag: the worker reports it per shard itself; Lambda only through the mapping's IteratorAge.
    lag = ("AWS/Lambda", "IteratorAge") if template == "lambda.yaml" else None
    if lag:
        assert lag in aws_metrics
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in aws_metrics


_INSIGHTS = re.compile(
    r"SELECT (SUM|MAX)\((\w+)\) FROM SCHEMA\((\w+), ([\w, ]+)\) WHERE app = '\$\{(\w+)\}'"
    r"( GROUP BY (\w+))?"
)
NOTIFY = {"If": ["NotifyTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def query_alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Alarm name -> its properties and its Metrics Insights query, parsed."""
    found = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm" or "Metrics" not in resource["Properties"]:
            continue
        properties = resource["Properties"]
        (returned,) = [m for m in properties["Metrics"] if m["ReturnData"]]
        expression = returned["Expression"]
        if isinstance(expression, dict):
            match = _INSIGHTS.fullmatch(" ".join(expression["Sub"].split()))
            assert match, expression
            function, metric, namespace, schema, app, _, group = match.groups()
            properties = {
                **properties,
                "query": (function, metric, namespace, frozenset(schema.split(", ")), app, group),
                "period": returned["Period"],
            }
        found[name] = properties
    return found


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "worker.yaml",
            {
                "DeadLetteredAlarm": (("SUM", "dead_lettered", None), 60, 1, 0),
                "FencedCommitsAlarm": (
                    ("SUM", "fenced_commits", None),
                    300,
                    1,
                    {"Ref": "FencedCommitsAlarmThreshold"},
                ),
                "ShardBehindAlarm": (
                    ("MAX", "millis_behind_latest", "shard"),
                    60,
                    10,
                    {"Ref": "ShardBehindAlarmMilliseconds"},
                ),
            },
        ),
        ("lambda.yaml", {"DeadLetteredAlarm": (("SUM", "dead_lettered", None), 60, 1, 0)}),
    ],
)
def test_alarms_on_kinesis_eo_metrics_query_their_catalogue_dimension_set_for_this_app(
    template: str, expected: dict[str, tuple[Any, ...]]
) -> None:
    document = load_template(INFRA / template)
    found = {
        name: properties
        for name, properties in query_alarms(document).items()
        if "query" in properties
    }
    assert set(found) == set(expected)
    for name, ((function, metric, group), period, periods, threshold) in expected.items():
        properties = found[name]
        got_function, got_metric, namespace, schema, app, got_group = properties["query"]
        assert (got_function, got_metric, got_group) == (function, metric, group)
        assert namespace == NAMESPACE
        # SCHEMA(...) matches the exact dimension set EMF publishes the metric under.
        assert schema == expected_dimensions(metric)
        assert app == APP_PARAMETER[template]
        assert (properties["period"], properties["EvaluationPeriods"]) == (period, periods)
        assert properties["Threshold"] == threshold
        assert properties["ComparisonOperator"] == "GreaterThanThreshold"
        # No data: nothing dead-lettered, nothing fenced, no shard read (caught elsewhere).
        assert properties["TreatMissingData"] == "notBreaching"
        assert properties["AlarmActions"] == NOTIFY
        assert properties["OKActions"] == NOTIFY
    for parameter in ("FencedCommitsAlarmThreshold", "ShardBehindAlarmMilliseconds"):
        if template == "worker.yaml":
            assert document["Parameters"][parameter]["Default"] > 0


def test_the_worker_alarm_compares_running_with_desired_tasks_from_container_insights() -> None:
    document = load_template(INFRA / "worker.yaml")
    assert {"Name": "containerInsights", "Value": "enabled"} in document["Resources"]["Cluster"][
        "Properties"
    ]["ClusterSettings"]
    properties = query_alarms(document)["WorkerTasksAlarm"]
    series = {m["Id"]: m for m in properties["Metrics"]}
    assert series["missingTasks"]["Expression"] == "desired - running"
    for key, metric_name in (("running", "RunningTaskCount"), ("desired", "DesiredTaskCount")):
        metric = series[key]["MetricStat"]["Metric"]
        assert metric["Namespace"] == "ECS/ContainerInsights"
        assert metric["MetricName"] == metric_name
        assert metric["Dimensions"] == [
            {"Name": "ClusterName", "Value": {"Ref": "Cluster"}},
            {"Name": "ServiceName", "Value": {"GetAtt": "Service.Name"}},
        ]
        assert series[key]["ReturnData"] is False
    assert (properties["Threshold"], properties["ComparisonOperator"]) == (
        0,
        "GreaterThanThreshold",
    )
    # No data is not "healthy": Container Insights is off, or the service is gone.
    assert properties["TreatMissingData"] == "missing"
    for actions in ("AlarmActions", "OKActions", "InsufficientDataActions"):
        assert properties[actions] == NOTIFY


def test_the_worker_stack_deploys_its_dashboard_with_the_stacks_names_rendered(
    moto_server: MotoServer,
) -> None:
    stack, outputs = deploy_worker(moto_server, Handler="tests.handlers:count_effect")
    body = json.loads(
        moto_server.client("cloudwatch").get_dashboard(DashboardName=outputs["DashboardName"])[
            "DashboardBody"
        ]
    )
    series = kinesis_eo_series(body)
    assert {app for _, _, app in series} == {stack}  # deploy_worker's AppName is the stack's name
    streams = {
        line[3]
        for widget in body["widgets"]
        for line in widget["properties"]["metrics"]
        if line[:3] == ["AWS/Kinesis", "IncomingRecords", "StreamName"]
    }
    assert streams == {outputs["StreamName"]}


# --- reading by enhanced fan-out (EfoConsumerName) ----------------------------------------------
# moto's CloudFormation has no AWS::Kinesis::StreamConsumer (it skips the resource, then fails
# the stack on the !GetAtt that names it), so the conditions are checked on the template as
# CloudFormation builds it for each value of the parameter.

EFO_ACTIONS = {"kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"}


def consumers(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Kinesis::StreamConsumer"
    }


def role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    (policy,) = template["Resources"][role]["Properties"]["Policies"]
    statements: list[dict[str, Any]] = policy["PolicyDocument"]["Statement"]
    return statements


def kinesis_actions(statements: list[dict[str, Any]]) -> set[str]:
    actions = set()
    for statement in statements:
        listed = statement["Action"]
        actions |= {a for a in ([listed] if isinstance(listed, str) else listed) if "kinesis:" in a}
    return actions


def worker_command(template: dict[str, Any]) -> list[Any]:
    (container,) = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    command: list[Any] = container["Command"]
    return command


def test_without_an_efo_consumer_name_the_worker_stack_polls_and_may_not_subscribe() -> None:
    polling = with_conditions(load_template(INFRA / "worker.yaml"))

    assert consumers(polling) == {}
    statements = role_statements(polling, "TaskRole")
    assert not kinesis_actions(statements) & (EFO_ACTIONS | {"kinesis:RegisterStreamConsumer"})
    assert "--efo" not in worker_command(polling)
    alarm = polling["Resources"]["IteratorAgeAlarm"]["Properties"]
    assert alarm["MetricName"] == "GetRecords.IteratorAgeMilliseconds"
    assert alarm["Dimensions"] == [{"Name": "StreamName", "Value": {"Ref": "Stream"}}]


def test_an_efo_consumer_name_registers_a_consumer_the_tasks_subscribe_through() -> None:
    efo = with_conditions(load_template(INFRA / "worker.yaml"), EfoConsumerName="orders-efo")

    # The stack registers the consumer on its own stream...
    assert consumers(efo) == {
        "StreamConsumer": {
            "StreamARN": {"GetAtt": "Stream.Arn"},
            "ConsumerName": {"Ref": "EfoConsumerName"},
        }
    }
    # ...so the task may subscribe through that consumer only, and register none itself.
    statements = role_statements(efo, "TaskRole")
    (subscribe,) = [s for s in statements if set(s["Action"]) & EFO_ACTIONS]
    assert set(subscribe["Action"]) == EFO_ACTIONS
    assert subscribe["Resource"] == {"GetAtt": "StreamConsumer.ConsumerARN"}
    assert not {a for a in kinesis_actions(statements) if "Register" in a}
    # ListShards and the stream's summary still go to the stream.
    (read,) = [s for s in statements if s.get("Sid") == "ReadTheStream"]
    assert {"kinesis:ListShards", "kinesis:DescribeStreamSummary"} <= set(read["Action"])
    assert read["Resource"] == {"GetAtt": "Stream.Arn"}

    command = worker_command(efo)
    at = command.index("--efo")
    assert command[at + 1] == {"Ref": "EfoConsumerName"}
    # The task's command, as `kinesis-eo run` parses it, reads through the stack's consumer.
    values = {name: str(spec.get("Default", "x")) for name, spec in efo["Parameters"].items()}
    values.update(EfoConsumerName="orders-efo", Handler="tests.handlers:count_effect")
    argv = [values.get(a["Ref"], "x") if isinstance(a, dict) else a for a in command]
    assert cli.build_parser().parse_args(argv).efo == "orders-efo"
    # Lag by subscription is the consumer's, not GetRecords' (which nobody calls then).
    alarm = efo["Resources"]["IteratorAgeAlarm"]["Properties"]
    assert alarm["MetricName"] == "SubscribeToShardEvent.MillisBehindLatest"
    assert alarm["Dimensions"] == [
        {"Name": "StreamName", "Value": {"Ref": "Stream"}},
        {"Name": "ConsumerName", "Value": {"Ref": "EfoConsumerName"}},
    ]


def test_an_efo_consumer_name_points_the_functions_mapping_at_a_consumer_of_its_stream() -> None:
    template = load_template(INFRA / "lambda.yaml")
    polling = with_conditions(template)
    efo = with_conditions(template, EfoConsumerName="billing-efo")

    stream_arn = polling["Resources"]["EventSourceMapping"]["Properties"]["EventSourceArn"]
    assert stream_arn["Sub"].endswith(":stream/${StreamName}")
    assert consumers(polling) == {}
    assert not kinesis_actions(role_statements(polling, "FunctionRole")) & EFO_ACTIONS

    assert consumers(efo) == {
        "StreamConsumer": {"StreamARN": stream_arn, "ConsumerName": {"Ref": "EfoConsumerName"}}
    }
    mapping = efo["Resources"]["EventSourceMapping"]["Properties"]
    assert mapping["EventSourceArn"] == {"GetAtt": "StreamConsumer.ConsumerARN"}
    # The mapping subscribes with the function's role: on the consumer, and nothing else new.
    statements = role_statements(efo, "FunctionRole")
    (subscribe,) = [s for s in statements if set(s["Action"]) & EFO_ACTIONS]
    assert set(subscribe["Action"]) == EFO_ACTIONS
    assert subscribe["Resource"] == {"GetAtt": "StreamConsumer.ConsumerARN"}
    assert not {a for a in kinesis_actions(statements) if "Register" in a}
