#!/usr/bin/env python3
"""The bad-input conformance of every RPC of clouddp.v1, driven by the descriptors generated from proto/.

Every RPC the descriptors hold must have bad-input cases here (missing required fields, unknown enum values,
out-of-range numbers, oversize strings, unknown references) or be listed in NO_INPUT with why it takes none;
a new RPC without cases fails. Each case is sent to the running services and its status code compared with the
one rule the README states (INVALID_ARGUMENT for what the request gets wrong, NOT_FOUND for what does not exist).

    conformance.py --dm 127.0.0.1:7400 --monitoring 127.0.0.1:7401
"""
import argparse
import importlib
import os
import sys
import tempfile

import grpc
from google.protobuf import json_format
from google.protobuf import message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402  (the stub generation of the interop check)

INVALID = "INVALID_ARGUMENT"
NOT_FOUND = "NOT_FOUND"
OUT_OF_RANGE = "OUT_OF_RANGE"
LONG = "x" * 10_000
UNKNOWN_ENUM = 99

# RPCs whose request has no field: nothing in it can be wrong.
NO_INPUT = {
    "ClientPolicyService.ListClientSettings": "its request has no field",
    "ClientPolicyService.ListBoundaryGroups": "its request has no field",
    "ContentLocationService.ListSigningKeys": "its request has no field",
    "ContentLocationService.RotateSigningKey": "its request has no field",
    "MonitoringService.ListFollowedDistributionPoints": "its request has no field",
    "SiteService.GetSite": "its request has no field",
    "SiteService.BackupSite": "its request has no field",
}

CASES = {
    "CertificateService.ImportManagementCertificate": [
        ("no source", {}, INVALID),
        ("a .pfx that is not one", {"source": {"pkcs12": {"data": "AAEC", "password": "x"}}}, INVALID),
    ],
    "CertificateService.ImportServiceCertificate": [
        ("no DP", {"source": {"pkcs12": {"data": "AAEC", "password": "x"}}}, INVALID),
        ("unknown DP", {"distribution_point_id": "no-such-dp", "source": {"certificate_id": "cert-none"}},
         NOT_FOUND),
    ],
    "CertificateService.GetCertificate": [("no id", {}, INVALID), ("unknown id", {"id": "cert-none"}, NOT_FOUND)],
    "CertificateService.ListCertificates": [
        ("unknown kind", {"kind": UNKNOWN_ENUM}, INVALID),
        ("unknown DP", {"distribution_point_id": "no-such-dp"}, NOT_FOUND),
    ],
    "CertificateService.ExportCertificate": [("no id", {}, INVALID), ("unknown id", {"id": "cert-none"}, NOT_FOUND)],
    "ClientPolicyService.CreateClientSettings": [
        ("no settings", {}, INVALID),
        ("no name", {"settings": {"priority": 1}}, INVALID),
        ("priority 0", {"settings": {"name": "conf-a", "priority": 0}}, INVALID),
        ("priority 10001", {"settings": {"name": "conf-b", "priority": 10001}}, INVALID),
        ("oversize name", {"settings": {"name": LONG, "priority": 1}}, INVALID),
        ("oversize device id", {"settings": {"name": "conf-c", "priority": 1, "device_ids": [LONG]}}, INVALID),
    ],
    "ClientPolicyService.UpdateClientSettings": [
        ("no settings", {}, INVALID),
        ("unknown id", {"settings": {"id": "cs-none", "name": "x", "priority": 1}}, NOT_FOUND),
    ],
    "ClientPolicyService.GetClientSettings": [("no id", {}, INVALID), ("unknown id", {"id": "cs-none"}, NOT_FOUND)],
    "ClientPolicyService.DeleteClientSettings": [("no id", {}, INVALID), ("unknown id", {"id": "cs-none"}, NOT_FOUND)],
    "ClientPolicyService.CreateBoundaryGroup": [
        ("no group", {}, INVALID),
        ("bad subnet", {"boundary_group": {"name": "conf-bg", "subnets": ["10.0.0.0/99"]}}, INVALID),
        ("oversize name", {"boundary_group": {"name": LONG, "subnets": ["10.0.0.0/8"]}}, INVALID),
        ("unknown DP", {"boundary_group": {"name": "conf-bg2", "subnets": ["10.0.0.0/8"],
                                           "distribution_point_ids": ["no-such-dp"]}}, NOT_FOUND),
    ],
    "ClientPolicyService.UpdateBoundaryGroup": [
        ("no group", {}, INVALID),
        ("unknown id", {"boundary_group": {"id": "bg-none", "name": "x", "subnets": ["10.0.0.0/8"]}}, NOT_FOUND),
    ],
    "ClientPolicyService.DeleteBoundaryGroup": [("no id", {}, INVALID), ("unknown id", {"id": "bg-none"}, NOT_FOUND)],
    "ClientPolicyService.CreateDeployment": [
        ("no deployment", {}, INVALID),
        ("no content", {"deployment": {"name": "conf-dep"}}, INVALID),
        ("unknown content", {"deployment": {"content_id": "no-such-content"}}, NOT_FOUND),
    ],
    "ClientPolicyService.GetDeployment": [("no id", {}, INVALID), ("unknown id", {"id": "dep-none"}, NOT_FOUND)],
    "ClientPolicyService.ListDeployments": [("unknown content", {"content_id": "no-such-content"}, NOT_FOUND)],
    "ClientPolicyService.DeleteDeployment": [("no id", {}, INVALID), ("unknown id", {"id": "dep-none"}, NOT_FOUND)],
    "ContentService.RegisterContent": [
        ("no name", {"type": "CONTENT_TYPE_APPLICATION", "source_path": "/tmp"}, INVALID),
        ("no type", {"name": "conf-content", "source_path": "/tmp"}, INVALID),
        ("unknown type", {"name": "conf-content", "type": UNKNOWN_ENUM, "source_path": "/tmp"}, INVALID),
        ("oversize name", {"name": LONG, "type": "CONTENT_TYPE_APPLICATION", "source_path": "/tmp"}, INVALID),
        ("no source", {"name": "conf-content", "type": "CONTENT_TYPE_APPLICATION"}, INVALID),
    ],
    "ContentService.GetContent": [("no id", {}, INVALID), ("unknown id", {"id": "no-such-content"}, NOT_FOUND)],
    "ContentService.ListContent": [
        ("unknown type", {"type": UNKNOWN_ENUM}, INVALID),
        ("garbage page token", {"page": {"page_token": "o100"}}, INVALID),
    ],
    "ContentService.DistributeContent": [
        ("no content", {"distribution_point_ids": ["x"]}, INVALID),
        ("unknown content", {"content_id": "no-such-content", "distribution_point_ids": ["x"]}, NOT_FOUND),
    ],
    "ContentService.RedistributeContent": [
        ("no content", {}, INVALID),
        ("unknown content", {"content_id": "no-such-content"}, NOT_FOUND),
    ],
    "ContentService.RemoveContent": [
        ("no content", {"distribution_point_id": "x"}, INVALID),
        ("unknown content", {"content_id": "no-such-content", "distribution_point_id": "x"}, NOT_FOUND),
    ],
    "ContentService.ValidateContent": [
        ("no content", {"distribution_point_id": "x"}, INVALID),
        ("unknown content", {"content_id": "no-such-content", "distribution_point_id": "x"}, NOT_FOUND),
    ],
    "ContentService.GetDistributionStatus": [("unknown content", {"content_id": "no-such-content"}, NOT_FOUND)],
    "ContentService.WatchDistributions": [("unknown content", {"content_id": "no-such-content"}, NOT_FOUND)],
    "ContentService.CancelDistribution": [
        ("no content", {}, INVALID),
        ("unknown content", {"content_id": "no-such-content"}, NOT_FOUND),
    ],
    "ContentLocationService.LocateContent": [
        ("no device", {"deployment_id": "dep-none", "ip_address": "10.0.0.1"}, INVALID),
        ("bad address", {"device_id": "pc-1", "deployment_id": "dep-none", "ip_address": "10.0.0"}, INVALID),
        ("unknown network", {"device_id": "pc-1", "deployment_id": "dep-none", "ip_address": "10.0.0.1",
                             "network": UNKNOWN_ENUM}, INVALID),
        ("unknown deployment", {"device_id": "pc-1", "deployment_id": "dep-none", "ip_address": "10.0.0.1"},
         NOT_FOUND),
    ],
    "DistributionPointService.InstallCloudDistributionPoint": [
        ("nothing", {}, INVALID),
        ("bad service name", {"cloud": {"service_name": "-Bad-", "subscription_id": "x", "region": "westeurope"}},
         INVALID),
    ],
    "DistributionPointService.RegisterDistributionPoint": [
        ("no name", {"kind": "DISTRIBUTION_POINT_KIND_ON_PREMISES", "folder_path": "/srv/x",
                     "address": "https://x.example"}, INVALID),
        ("oversize name", {"name": LONG, "kind": "DISTRIBUTION_POINT_KIND_ON_PREMISES", "folder_path": "/srv/x",
                           "address": "https://x.example"}, INVALID),
        ("unknown kind", {"name": "conf-dp", "kind": UNKNOWN_ENUM, "folder_path": "/srv/x",
                          "address": "https://x.example"}, INVALID),
        ("no address", {"name": "conf-dp", "kind": "DISTRIBUTION_POINT_KIND_ON_PREMISES", "folder_path": "/srv/x"},
         INVALID),
        ("relative folder", {"name": "conf-dp", "kind": "DISTRIBUTION_POINT_KIND_ON_PREMISES",
                             "folder_path": "srv/x", "address": "https://x.example"}, INVALID),
    ],
    "DistributionPointService.GetDistributionPoint": [
        ("no id", {}, INVALID),
        ("unknown", {"id": "nope"}, NOT_FOUND),
        # Every string field of a request is at most 4,096 bytes: refused before any work.
        ("1 MiB id", {"id": "x" * (1 << 20)}, INVALID),
        ("unknown 4,096-byte id", {"id": "x" * 4096}, NOT_FOUND),
    ],
    "DistributionPointService.ListDistributionPoints": [
        ("unknown kind", {"kind": UNKNOWN_ENUM}, INVALID),
        ("garbage page token", {"page": {"page_token": "garbage"}}, INVALID),
    ],
    "DistributionPointService.UpdateDistributionPoint": [
        ("no id", {"update_mask": "address"}, INVALID),
        ("unknown id", {"id": "nope", "update_mask": "address", "distribution_point": {"address": "https://x"}},
         NOT_FOUND),
    ],
    "DistributionPointService.StartService": [("no id", {}, INVALID), ("unknown", {"id": "nope"}, NOT_FOUND)],
    "DistributionPointService.StopService": [
        ("no id", {}, INVALID),
        ("unknown", {"id": "nope"}, NOT_FOUND),
        ("oversize reason", {"id": "nope", "reason": LONG}, INVALID),
    ],
    "DistributionPointService.ScaleService": [
        ("no id", {"instances": 2}, INVALID),
        ("unknown", {"id": "nope", "instances": 2}, NOT_FOUND),
    ],
    "DistributionPointService.DeleteDistributionPoint": [("no id", {}, INVALID),
                                                         ("unknown", {"id": "nope"}, NOT_FOUND)],
    "DistributionPointService.WatchDistributionPoints": [],
    "DistributionPointService.GetStoreAccess": [("no id", {}, INVALID), ("unknown", {"id": "nope"}, NOT_FOUND)],
    "DistributionPointService.ListStoreObjects": [
        ("outside usage/ and content/", {"id": "nope", "prefix": "/etc"}, INVALID),
        ("climbing out", {"id": "nope", "prefix": "usage/../x"}, INVALID),
        ("no id", {"prefix": "usage/"}, INVALID),
        ("unknown", {"id": "nope", "prefix": "usage/"}, NOT_FOUND),
    ],
    "DistributionPointService.ReadStoreObject": [
        ("not a usage log", {"id": "nope", "path": "content/a"}, INVALID),
        ("no id", {"path": "usage/a"}, INVALID),
        ("unknown", {"id": "nope", "path": "usage/a"}, NOT_FOUND),
    ],
    "DistributionPointGroupService.CreateGroup": [
        ("no name", {}, INVALID),
        ("oversize name", {"name": LONG}, INVALID),
        ("oversize description", {"name": "conf-group", "description": LONG}, INVALID),
        ("unknown member", {"name": "conf-group", "member_ids": ["no-such-dp"]}, NOT_FOUND),
    ],
    "DistributionPointGroupService.GetGroup": [("no id", {}, INVALID), ("unknown", {"id": "nope"}, NOT_FOUND)],
    "DistributionPointGroupService.UpdateGroup": [("no id", {"name": "x"}, INVALID),
                                                  ("unknown", {"id": "nope", "name": "x"}, NOT_FOUND)],
    "DistributionPointGroupService.DeleteGroup": [("no id", {}, INVALID), ("unknown", {"id": "nope"}, NOT_FOUND)],
    "DistributionPointGroupService.AddMembers": [
        ("no group", {"distribution_point_ids": ["x"]}, INVALID),
        ("unknown group", {"group_id": "nope", "distribution_point_ids": ["x"]}, NOT_FOUND),
    ],
    "DistributionPointGroupService.RemoveMembers": [
        ("no group", {"distribution_point_ids": ["x"]}, INVALID),
        ("unknown group", {"group_id": "nope", "distribution_point_ids": ["x"]}, NOT_FOUND),
    ],
    "DistributionPointGroupService.ListGroups": [("garbage page token", {"page": {"page_token": "x"}}, INVALID)],
    "MonitoringService.GetUsage": [
        ("no DP", {}, INVALID),
        ("unknown DP", {"distribution_point_id": "nope"}, NOT_FOUND),
    ],
    "MonitoringService.ListAlerts": [
        ("unknown kind", {"kinds": [UNKNOWN_ENUM]}, INVALID),
        ("unknown severity", {"min_severity": UNKNOWN_ENUM}, INVALID),
    ],
    "MonitoringService.GetAlert": [("no id", {}, INVALID), ("unknown", {"id": "alert-none"}, NOT_FOUND)],
    "MonitoringService.PostponeAlert": [
        ("no time", {"id": "alert-none"}, INVALID),
        ("in the past", {"id": "alert-none", "until": "2001-01-01T00:00:00Z"}, INVALID),
        ("beyond a year", {"id": "alert-none", "until": "9999-12-31T00:00:00Z"}, INVALID),
        ("nanos out of range", lambda request: setattr(request.until, "nanos", -1) or setattr(
            request, "id", "alert-none") or request, INVALID),
    ],
    "MonitoringService.AcknowledgeAlert": [("no id", {}, INVALID), ("unknown", {"id": "alert-none"}, NOT_FOUND)],
    "MonitoringService.SubscribeAlerts": [
        ("unknown kind", {"kinds": [UNKNOWN_ENUM]}, INVALID),
        ("heartbeat 301 s", {"heartbeat_seconds": 301}, INVALID),
        ("cursor ahead", {"after_sequence": 10**12}, OUT_OF_RANGE),
    ],
    "SiteService.RestoreSite": [("not a backup", [{"data": "bm90IGEgYmFja3Vw"}], INVALID)],
    "DeviceService.CreateEnrollmentToken": [
        ("no uses", {"lifetime_seconds": 3600}, INVALID),
        ("100001 uses", {"uses": 100001, "lifetime_seconds": 3600}, INVALID),
        ("10 s", {"uses": 1, "lifetime_seconds": 10}, INVALID),
        ("oversize description", {"uses": 1, "lifetime_seconds": 3600, "description": LONG}, INVALID),
    ],
    "DeviceService.EnrollDevice": [("a plaintext server has no CA", {"token": "x", "device_id": "pc-1"},
                                    "FAILED_PRECONDITION")],
    "DeviceService.RenewDeviceCertificate": [("not a device", {}, "PERMISSION_DENIED")],
    "DeviceService.ListDevices": [("bad page token", {"page": {"page_token": "nope"}}, INVALID)],
    "DeviceService.BlockDevice": [
        ("bad id", {"id": "a b"}, INVALID),
        ("unknown device", {"id": "pc-none"}, NOT_FOUND),
        ("oversize reason", {"id": "pc-none", "reason": LONG}, INVALID),
    ],
    "DeviceService.UnblockDevice": [("unknown device", {"id": "pc-none"}, NOT_FOUND)],
    "AuditService.ListAuditEvents": [
        ("bad page token", {"page": {"page_token": "nope"}}, INVALID),
        ("oversize principal", {"principal": LONG}, INVALID),
    ],
    "AccessService.ListRoleBindings": [("a device as principal", {"principal": "device/pc-1"}, INVALID)],
    "AccessService.GrantRole": [
        ("no principal", {"role": "read-only-analyst"}, INVALID),
        ("unknown role", {"principal": "admin/bob", "role": "root"}, INVALID),
        ("built-in role", {"principal": "admin/bob", "role": "device"}, INVALID),
        ("oversize name", {"principal": "admin/" + LONG, "role": "read-only-analyst"}, INVALID),
    ],
    "AccessService.RevokeRole": [
        ("bad principal", {"principal": "admin/a b", "role": "read-only-analyst"}, INVALID),
        ("role not held", {"principal": "admin/nobody", "role": "read-only-analyst"}, NOT_FOUND),
    ],
    "AccessService.IssueAdminCredential": [
        ("a device as principal", {"principal": "device/pc-1", "certificate_request_pem": "x"}, INVALID),
        ("no principal", {"certificate_request_pem": "x"}, INVALID),
        # This server runs without the site CA: nothing can be signed.
        ("plaintext server", {"principal": "admin/a", "certificate_request_pem": "x"}, "FAILED_PRECONDITION"),
    ],
    "AccessService.ListAdminCredentials": [
        ("bad principal", {"principal": "admin/a b"}, INVALID),
    ],
    "AccessService.RevokeAdminCredential": [
        ("unknown serial", {"serial": "0a:1b"}, NOT_FOUND),
        ("no serial", {}, INVALID),
        ("not hex", {"serial": "serial-1"}, INVALID),
    ],
}

# A server stream with no input but its flag: nothing in it can be wrong.
NO_INPUT["DistributionPointService.WatchDistributionPoints"] = "its only field is a flag"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dm", required=True)
    parser.add_argument("--monitoring", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out_dir:
        check.generate(out_dir)
        failures = run(args)
    if failures:
        sys.exit(f"{len(failures)} case(s) failed:\n" + "\n".join(failures))


def methods():
    """Every RPC of clouddp.v1: (qualified name, method descriptor, module)."""
    proto_dir = os.path.join(check.PROTO_DIR, "clouddp", "v1")
    for name in sorted(os.listdir(proto_dir)):
        if not name.endswith(".proto"):
            continue
        module = importlib.import_module(f"clouddp.v1.{name[:-6]}_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield f"{service.name}.{method.name}", method


def call(channel, method, case):
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    serialize = request_class.SerializeToString
    deserialize = response_class.FromString
    try:
        if method.client_streaming:
            requests = [json_format.ParseDict(item, request_class()) for item in case]
            channel.stream_unary(path, serialize, deserialize)(iter(requests), timeout=10)
        elif method.server_streaming:
            request = json_format.ParseDict(case, request_class())
            next(channel.unary_stream(path, serialize, deserialize)(request, timeout=10))
        else:
            # A case the JSON form cannot write (an out-of-range timestamp) is a function filling the request.
            request = case(request_class()) if callable(case) else json_format.ParseDict(case, request_class())
            channel.unary_unary(path, serialize, deserialize)(request, timeout=10)
        return "OK", ""
    except grpc.RpcError as error:
        return error.code().name, error.details()


def run(args):
    dm = grpc.insecure_channel(args.dm, options=[("grpc.max_send_message_length", 64 << 20)])
    monitoring = grpc.insecure_channel(args.monitoring)
    failures = []
    for name, method in methods():
        cases = CASES.get(name)
        if not cases and name not in NO_INPUT:
            failures.append(f"{name}: no bad-input cases (add them to CASES, or to NO_INPUT with why)")
            continue
        channel = monitoring if name.startswith("MonitoringService.") else dm
        for label, case, expected in cases or []:
            got, details = call(channel, method, case)
            verdict = "ok  " if got == expected else "FAIL"
            print(f"{verdict} {name}: {label}: {got} {details[:120] if got != expected else ''}")
            if got != expected:
                failures.append(f"{name}: {label}: expected {expected}, got {got}: {details}")
    return failures


if __name__ == "__main__":
    main()
