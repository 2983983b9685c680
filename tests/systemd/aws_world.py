#!/usr/bin/env python3
"""The AWS side of the three-container failover check in tests/systemd/cluster.sh.

Run with the Python of the virtualenv that has `moto[server]` (boto3 comes with it).

    aws_world.py serve HOST
        Starts moto's server on HOST at a port the kernel picks, prints
        `moto listening on HOST:PORT` once it answers, and runs until its standard input reaches
        end of file (the harness holds the pipe: the emulator ends with the harness).
    aws_world.py create ENDPOINT SUBNET_CIDR IP...
        Creates a VPC and a subnet, one instance per IP (that primary private address), and a
        VPC Elastic IP. Prints `instance IP INSTANCE_ID ENI_ID` per instance, then
        `eip ALLOCATION_ID PUBLIC_IP`.
    aws_world.py holder ENDPOINT ALLOCATION_ID
        Prints the ENI the Elastic IP is associated with, or `none`.
    aws_world.py wait-move ENDPOINT ALLOCATION_ID FROM_ENI TIMEOUT
        Prints `ready`, reads one line from stdin (the Unix time, with fractions, at which the
        harness stopped the holder), then polls DescribeAddresses every 50 ms until the Elastic
        IP is on another ENI; prints `moved ENI SECONDS` (time since the stop), or exits 1 with
        `timeout ...` after TIMEOUT seconds.

Fails closed: the emulator listens, and boto3 is pointed, only at loopback or at the host
address of a test bridge (10.78.S.1); any other host is refused, so nothing here ever talks to
real AWS. Static test credentials are forced.
"""
import ipaddress
import os
import re
import sys
import time
import urllib.parse

for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
            "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    os.environ.pop(key, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["NO_PROXY"] = "*"

REGION = "us-east-1"


def allowed_host(host):
    if host in ("localhost",):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.is_loopback:
        return True
    return re.fullmatch(r"10\.78\.\d{1,3}\.1", host) is not None


def checked_endpoint(url):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not allowed_host(parts.hostname):
        raise SystemExit(f"refusing endpoint {url!r}: only loopback or a test bridge (10.78.S.1)")
    return url


def ec2(endpoint):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=checked_endpoint(endpoint),
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )


def serve(host):
    import logging
    import urllib.request

    from moto.server import ThreadedMotoServer

    if not allowed_host(host):
        raise SystemExit(f"refusing to listen on {host!r}: only loopback or a test bridge (10.78.S.1)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{host}:{port}/moto-api/", timeout=30) as response:
        response.read()
    print(f"moto listening on {host}:{port}", flush=True)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.stdin.buffer.read()
    os._exit(0)


def create(endpoint, subnet_cidr, ips):
    client = ec2(endpoint)
    network = ipaddress.ip_network(subnet_cidr)
    vpc_cidr = str(network.supernet(new_prefix=16))
    vpc = client.create_vpc(CidrBlock=vpc_cidr)["Vpc"]["VpcId"]
    subnet = client.create_subnet(VpcId=vpc, CidrBlock=subnet_cidr)["Subnet"]["SubnetId"]
    tags = [{"Key": "ha-agent-cluster", "Value": "systemd-test"}]
    for ip in ips:
        instance = client.run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.micro",
            SubnetId=subnet, PrivateIpAddress=ip,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]
        enis = [e for e in instance["NetworkInterfaces"] if e["PrivateIpAddress"] == ip]
        if not enis:
            raise SystemExit(f"the instance for {ip} has no interface with that address: {instance}")
        print(f"instance {ip} {instance['InstanceId']} {enis[0]['NetworkInterfaceId']}")
    eip = client.allocate_address(Domain="vpc")
    client.create_tags(Resources=[eip["AllocationId"]], Tags=tags)
    print(f"eip {eip['AllocationId']} {eip['PublicIp']}")


def holder_of(client, allocation):
    address = client.describe_addresses(AllocationIds=[allocation])["Addresses"][0]
    return address.get("NetworkInterfaceId") or "none"


def holder(endpoint, allocation):
    print(holder_of(ec2(endpoint), allocation))


def wait_move(endpoint, allocation, from_eni, timeout):
    client = ec2(endpoint)
    holder_of(client, allocation)  # warm up: connection and parsers
    print("ready", flush=True)
    stopped_at = float(sys.stdin.readline())
    deadline = time.monotonic() + float(timeout)
    current = from_eni
    while True:
        try:
            current = holder_of(client, allocation)
        except Exception as error:  # keep polling through a transient error
            current = f"error: {error}"
        if current not in (from_eni, "none") and current.startswith("eni-"):
            print(f"moved {current} {time.time() - stopped_at:.3f}", flush=True)
            return 0
        if time.monotonic() >= deadline:
            print(f"timeout: after {timeout} s the Elastic IP is on {current}", flush=True)
            return 1
        time.sleep(0.05)


def main(argv):
    if len(argv) >= 2 and argv[0] == "serve":
        return serve(argv[1])
    if len(argv) >= 4 and argv[0] == "create":
        return create(argv[1], argv[2], argv[3:])
    if len(argv) == 3 and argv[0] == "holder":
        return holder(argv[1], argv[2])
    if len(argv) == 5 and argv[0] == "wait-move":
        return wait_move(*argv[1:])
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) or 0)
