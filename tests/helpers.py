"""Small configs and runners shared by the tests (fast on 2 CPU cores)."""

import collections
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

from jaxdl import config

REPO = Path(__file__).resolve().parent.parent


def jaxdl(*args, check=True, timeout=300):
    """Run the ``jaxdl`` CLI as a real subprocess in the repository root."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "jaxdl", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def tiny_sweep(tmp_path, **overrides):
    """``sweeps/tiny_spiral.yaml`` with its study directory under ``tmp_path``."""
    from jaxdl import sweep

    return sweep.load(REPO / "sweeps" / "tiny_spiral.yaml",
                      {"study_dir": str(tmp_path / "study"), **overrides})


def spiral_cfg(**overrides) -> config.Config:
    """A tiny playground run: 400 spiral points, a 2x16 tanh MLP."""
    base = {
        "name": "tiny_spiral",
        "seed": 0,
        "data": {"name": "spiral", "n_samples": 400, "noise": 0.05, "val_fraction": 0.2},
        "model": {"name": "mlp", "depth": 2, "width": 16, "activation": "tanh"},
        "optim": {"name": "adam", "learning_rate": 0.01},
        "train": {"epochs": 3, "batch_size": 16, "progress": False},
    }
    cfg = config.from_dict(base)
    return cfg.replace(overrides) if overrides else cfg


class Server:
    """Serves ``routes[path] = (status, body, mode)``; mode "truncate" lies about the length."""

    def __init__(self):
        self.routes: dict[str, tuple[int, bytes, str]] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] += 1
                status, body, mode = server.routes.get(self.path, (404, b"not found", "ok"))
                self.send_response(status)
                declared = len(body) + 1000 if mode == "truncate" else len(body)
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                self.wfile.write(body)
                # HTTP/1.0: returning closes the connection, short of the declared length.

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, body: bytes, status: int = 200, mode: str = "ok") -> str:
        self.routes[path] = (status, body, mode)
        return self.base + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


NOTEBOOKS = REPO / "notebooks"


def execute_notebook(name: str, monkeypatch, tmp_path: Path, timeout: int = 600):
    """Run ``notebooks/<name>`` top to bottom in a fresh Jupyter kernel (cwd
    notebooks/, figures inline, temporary files under ``tmp_path``; the
    suite's XLA flags unless the test asks for the ``xla_defaults``
    fixture) and return the executed notebook; a cell that raises fails the
    call with the cell's traceback."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("TMPDIR", str(tmp_path))    # the notebooks' scratch directories
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def notebook_outputs(nb) -> tuple[str, int]:
    """(everything the cells printed or returned as text, the number of PNG
    figures)."""
    text, figures = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append(out["text"])
            data = out.get("data", {})
            figures += "image/png" in data
            if "text/plain" in data:
                text.append(data["text/plain"])
    return "\n".join(text), figures
