#!/usr/bin/env python3
"""A foreign client of clouddp: Python stubs generated from proto/ with grpcio-tools, then the contract checks a
client in another language relies on. Exits 0 when every check holds; prints one line per check.

    check.py --dm 127.0.0.1:7400 --monitoring 127.0.0.1:7401 --folder /tmp/some-dir
"""
import argparse
import importlib
import os
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")


def generate(out_dir):
    """Compiles every clouddp .proto into Python modules under out_dir; returns the module namespace."""
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    files = sorted(
        os.path.join("clouddp", "v1", name)
        for name in os.listdir(os.path.join(PROTO_DIR, "clouddp", "v1"))
        if name.endswith(".proto")
    )
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}",
         f"--grpc_python_out={out_dir}", *files]
    )
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, out_dir)


def load(name):
    return importlib.import_module(f"clouddp.v1.{name}")


FAILURES = []


def check(name, condition, detail=""):
    print(f"{'ok  ' if condition else 'FAIL'} {name}{': ' + str(detail) if detail and not condition else ''}")
    if not condition:
        FAILURES.append(name)


def code_of(call):
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dm", required=True)
    parser.add_argument("--monitoring", required=True)
    parser.add_argument("--folder", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out_dir:
        generate(out_dir)
        run(args)
    if FAILURES:
        sys.exit(f"{len(FAILURES)} check(s) failed: {', '.join(FAILURES)}")


def run(args):
    common = load("common_pb2")
    dps = load("distribution_points_pb2")
    dps_grpc = load("distribution_points_pb2_grpc")
    content = load("content_pb2")
    content_grpc = load("content_pb2_grpc")
    certs = load("certificates_pb2")
    certs_grpc = load("certificates_pb2_grpc")
    mon = load("monitoring_pb2")
    mon_grpc = load("monitoring_pb2_grpc")

    dm = grpc.insecure_channel(args.dm)
    monitoring = grpc.insecure_channel(args.monitoring)
    dp_client = dps_grpc.DistributionPointServiceStub(dm)

    # gzip: a channel that compresses every request works against both services.
    zipped = grpc.insecure_channel(args.dm, compression=grpc.Compression.Gzip)
    check("gzip request to the distribution manager",
          code_of(lambda: dps_grpc.DistributionPointServiceStub(zipped).ListDistributionPoints(
              dps.ListDistributionPointsRequest(), timeout=10)) == grpc.StatusCode.OK)
    zipped_mon = grpc.insecure_channel(args.monitoring, compression=grpc.Compression.Gzip)
    check("gzip request to monitoring",
          code_of(lambda: mon_grpc.MonitoringServiceStub(zipped_mon).ListAlerts(
              mon.ListAlertsRequest(), timeout=10)) == grpc.StatusCode.OK)

    # Unknown enum values in filters are refused, not read as "any".
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    mon_client = mon_grpc.MonitoringServiceStub(monitoring)
    for name, call in [
        ("ListDistributionPoints kind=42",
         lambda: dp_client.ListDistributionPoints(dps.ListDistributionPointsRequest(kind=42), timeout=10)),
        ("ListContent type=77",
         lambda: content_grpc.ContentServiceStub(dm).ListContent(content.ListContentRequest(type=77), timeout=10)),
        ("ListCertificates kind=9",
         lambda: certs_grpc.CertificateServiceStub(dm).ListCertificates(
             certs.ListCertificatesRequest(kind=9), timeout=10)),
        ("ListAlerts kinds=[42]",
         lambda: mon_client.ListAlerts(mon.ListAlertsRequest(kinds=[42]), timeout=10)),
        ("ListAlerts min_severity=9",
         lambda: mon_client.ListAlerts(mon.ListAlertsRequest(min_severity=9), timeout=10)),
        ("SubscribeAlerts kinds=[42]",
         lambda: next(mon_client.SubscribeAlerts(mon.SubscribeAlertsRequest(kinds=[42]), timeout=10))),
        ("SubscribeAlerts heartbeat_seconds=301",
         lambda: next(mon_client.SubscribeAlerts(mon.SubscribeAlertsRequest(heartbeat_seconds=301), timeout=10))),
    ]:
        got = code_of(call)
        check(f"{name} is INVALID_ARGUMENT", got == invalid, got)

    # One rule for codes: a missing id is INVALID_ARGUMENT, an unknown referenced DP is NOT_FOUND, a duplicate
    # deployment name is ALREADY_EXISTS.
    policy = load("client_policy_pb2")
    policy_grpc = load("client_policy_pb2_grpc")
    policy_client = policy_grpc.ClientPolicyServiceStub(dm)
    for name, call, expected in [
        ("GetGroup id=''", lambda: dps_grpc.DistributionPointGroupServiceStub(dm).GetGroup(
            dps.GetGroupRequest(id=""), timeout=10), invalid),
        ("GetAlert id=''", lambda: mon_client.GetAlert(mon.GetAlertRequest(id=""), timeout=10), invalid),
        ("GetDistributionPoint id=''", lambda: dp_client.GetDistributionPoint(
            dps.GetDistributionPointRequest(id=""), timeout=10), invalid),
        ("CreateBoundaryGroup with an unknown DP", lambda: policy_client.CreateBoundaryGroup(
            policy.CreateBoundaryGroupRequest(boundary_group=policy.BoundaryGroup(
                name="interop-bg", subnets=["10.9.0.0/16"], distribution_point_ids=["no-such-dp"])), timeout=10),
         grpc.StatusCode.NOT_FOUND),
        ("CreateDeployment of unknown content", lambda: policy_client.CreateDeployment(
            policy.CreateDeploymentRequest(deployment=policy.Deployment(content_id="no-such-content")), timeout=10),
         grpc.StatusCode.NOT_FOUND),
    ]:
        got = code_of(call)
        check(f"{name} is {expected.name}", got == expected, got)

    # A folder DP's delete removes what clouddp wrote, nothing else; two DPs never share a folder.
    shared = os.path.join(args.folder, "shared")
    os.makedirs(os.path.join(shared, "sub"), exist_ok=True)
    with open(os.path.join(shared, "sub", "notes.md"), "w") as notes:
        notes.write("not clouddp's")
    dp_client.RegisterDistributionPoint(dps.RegisterDistributionPointRequest(
        name="owner-dp", kind=common.DISTRIBUTION_POINT_KIND_ON_PREMISES, folder_path=shared,
        address="https://owner.example"), timeout=10)
    got = code_of(lambda: dp_client.RegisterDistributionPoint(dps.RegisterDistributionPointRequest(
        name="squatter-dp", kind=common.DISTRIBUTION_POINT_KIND_ON_PREMISES, folder_path=os.path.join(shared, "sub"),
        address="https://squatter.example"), timeout=10))
    check("a DP inside another DP's folder is ALREADY_EXISTS", got == grpc.StatusCode.ALREADY_EXISTS, got)
    dp_client.DeleteDistributionPoint(dps.DeleteDistributionPointRequest(id="owner-dp"), timeout=30)
    check("deleting a folder DP leaves files clouddp did not write",
          os.path.exists(os.path.join(shared, "sub", "notes.md")))

    # Renaming client settings to a name another one has is ALREADY_EXISTS, at once, and changes nothing.
    first = policy_client.CreateClientSettings(policy.CreateClientSettingsRequest(settings=policy.ClientSettings(
        name="interop-r1", priority=7, device_ids=["r1-a", "r1-b"])), timeout=10)
    policy_client.CreateClientSettings(policy.CreateClientSettingsRequest(settings=policy.ClientSettings(
        name="interop-r2", priority=8)), timeout=10)
    started = time.monotonic()
    got = code_of(lambda: policy_client.UpdateClientSettings(policy.UpdateClientSettingsRequest(
        settings=policy.ClientSettings(id=first.id, name="INTEROP-R2", priority=7, device_ids=["r1-c"])), timeout=30))
    check("renaming client settings onto another's name is ALREADY_EXISTS at once",
          got == grpc.StatusCode.ALREADY_EXISTS and time.monotonic() - started < 3, got)
    kept = policy_client.GetClientSettings(policy.GetClientSettingsRequest(id=first.id), timeout=10)
    check("a refused rename keeps the name and the assignments",
          kept.name == "interop-r1" and sorted(kept.device_ids) == ["r1-a", "r1-b"], kept)

    # A cursor ahead of the newest event is OUT_OF_RANGE, not an endless run of heartbeats.
    got = code_of(lambda: next(mon_client.SubscribeAlerts(
        mon.SubscribeAlertsRequest(after_sequence=10**12, heartbeat_seconds=1), timeout=10)))
    check("SubscribeAlerts with a cursor ahead is OUT_OF_RANGE", got == grpc.StatusCode.OUT_OF_RANGE, got)

    # A server stream ends at the call's deadline (what the server answers is checked without a client-side timer
    # in tests/tests/interop.rs).
    started = time.monotonic()
    got = code_of(lambda: list(dp_client.WatchDistributionPoints(dps.WatchDistributionPointsRequest(), timeout=1)))
    check("a watch stream ends at its 1 s deadline with DEADLINE_EXCEEDED",
          got == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - started < 5, got)

    # Revisions increase with every change: a delete's events are ordered by revision, the DELETED one last.
    events = []
    watch = dp_client.WatchDistributionPoints(dps.WatchDistributionPointsRequest(skip_snapshot=True), timeout=60)

    def follow():
        try:
            for event in watch:
                if event.distribution_point.name == "interop-branch":
                    events.append((event.type, event.revision))
                    if event.type == dps.DISTRIBUTION_POINT_EVENT_TYPE_DELETED:
                        return
        except grpc.RpcError:
            pass

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.5)
    dp_client.RegisterDistributionPoint(dps.RegisterDistributionPointRequest(
        name="interop-branch", kind=common.DISTRIBUTION_POINT_KIND_ON_PREMISES,
        folder_path=os.path.join(args.folder, "interop-branch"), address="https://interop-branch.example"),
        timeout=10)
    dp_client.DeleteDistributionPoint(dps.DeleteDistributionPointRequest(id="interop-branch"), timeout=30)
    follower.join(30)
    watch.cancel()
    revisions = [revision for _, revision in events]
    check("a delete's events have increasing revisions, DELETED last",
          len(events) >= 3 and events[-1][0] == dps.DISTRIBUTION_POINT_EVENT_TYPE_DELETED
          and all(a < b for a, b in zip(revisions, revisions[1:])), events)


if __name__ == "__main__":
    main()
