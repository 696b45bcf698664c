"""`push`: upload a bundle (config, weights, model card) to a Hugging Face Hub model repo.
`python -m export predict --model hf://USER/REPO` (or any ModelBundle.load) fetches it back."""
from __future__ import annotations

from .cli import emit

FILES = ["config.json", "model.safetensors", "README.md"]


def register(sub):
    p = sub.add_parser("push", help="upload a bundle to a Hugging Face Hub model repo")
    p.add_argument("--model", required=True, help="bundle folder or shipped model name")
    p.add_argument("--repo", required=True, help="Hub repo id, e.g. user/ser-emodb")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the cached login)")
    p.set_defaults(func=run)


def push(bundle, repo_id: str, private: bool = False, token: str | None = None, api=None) -> str:
    from huggingface_hub import HfApi
    from ser_core.errors import ModelBundleError
    if repo_id.count("/") != 1:
        raise ModelBundleError(f"{repo_id!r} is not a Hub repo id (accepted: 'user/name')")
    if bundle.config.get("weights_from"):  # its model.safetensors holds only what differs from its base
        raise ModelBundleError(f"{bundle.folder}: reads its weights from {bundle.config['weights_from']} "
                               "(weights_from), which a Hub repo would not have (accepted: a self-contained bundle)")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(bundle.folder), repo_id=repo_id, repo_type="model",
                             allow_patterns=FILES,
                             commit_message=f"{bundle.name}: {bundle.config.get('protocol')} protocol, "
                                            f"test accuracy {bundle.config['metrics']['test']['accuracy']:.3f}")
    return str(getattr(info, "commit_url", info))


def run(args):
    from ser_core.models.bundle import ModelBundle
    b = ModelBundle.load(args.model)
    emit({"bundle": b.name, "repo": args.repo, "commit": push(b, args.repo, args.private, args.token)})
