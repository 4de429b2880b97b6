"""Self-host an OpenAI-compatible judge endpoint for ``feedback=judge`` (docs/reference.md §3.6).

    python scripts/serve_judge.py                                  # SmolLM2-135M on http://127.0.0.1:8000/v1
    python scripts/serve_judge.py --model <HF folder or hub id> --port 8001 --max-new-tokens 256
    python scripts/train.py feedback=judge feedback.model=smollm2-135m feedback.base_url=http://127.0.0.1:8000/v1

Serves ``POST /v1/chat/completions`` and ``GET /v1/models`` (:mod:`serl.policy.serve`) until Ctrl-C. No
authentication: keep the default loopback host unless a proxy in front checks keys. On a GPU, vLLM's
OpenAI server is the faster choice; any OpenAI-compatible endpoint works.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched from a hub unless the user asks for it
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serl.policy.serve import load_chat_model, make_server  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="serl model name (smollm2-135m, smollm2-135m-sft, tiny), HF folder or hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="cap on generated tokens per request (requests' max_tokens above it are capped)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL-style repetition penalty (1 = none)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="model weights dtype")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    chat = load_chat_model(
        args.model,
        max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty,
        dtype=args.dtype,
        device=args.device,
    )
    server = make_server(chat, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving {args.model!r} at http://{host}:{port}/v1  (POST /chat/completions, GET /models; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
