"""The opt-in model zoo: hub names load only with permission, the size is printed before anything is fetched,
a cached model loads offline without permission, pickle-only repos are refused. The hub is always mocked: the
fake ``snapshot_download`` copies a tiny model saved by ``tests/hf_families.py`` into a fake HF cache folder, and
sockets are blocked so any real network use fails the test."""
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")
hub = pytest.importorskip("huggingface_hub")

from tests import hf_families as F  # noqa: E402
from workbench.models import from_hf, load_pretrained, zoo  # noqa: E402
from workbench.models.hf_adapter import HFModel  # noqa: E402

REPO = "EleutherAI/pythia-70m"
SHA = "a" * 40


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return F.save_family("gpt_neox", tmp_path_factory.mktemp("zoo-src"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No real network: every socket connect fails; downloads are off unless a test turns them on."""
    def refuse(*a, **k):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv(zoo.ENV_VAR, raising=False)


def populate_cache(cache: Path, repo: str, src: Path, names=None) -> Path:
    """Lay ``src``'s files out the way the HF cache does: models--org--name/{refs/main, snapshots/<sha>/...}."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / SHA
    snap.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if names is None or p.name in names:
            (snap / p.name).write_bytes(p.read_bytes())
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(SHA)
    return snap


class FakeHub:
    """Records the calls to the two hub functions the zoo uses."""

    def __init__(self, monkeypatch, src: Path, extra=(), capsys=None, weights=True):
        self.calls, self.src, self.capsys = [], src, capsys
        files = {p.name: p.stat().st_size for p in src.iterdir() if weights or not p.name.endswith(".safetensors")}
        files.update(dict(extra))
        self.siblings = [SimpleNamespace(rfilename=n, size=s, lfs=None) for n, s in files.items()]
        monkeypatch.setattr(hub, "model_info", self.model_info)
        monkeypatch.setattr(hub, "snapshot_download", self.snapshot_download)

    def model_info(self, repo_id, revision=None, files_metadata=False, **kw):
        self.calls.append(("model_info", repo_id, files_metadata))
        return SimpleNamespace(id=repo_id, sha=SHA, siblings=self.siblings)

    def snapshot_download(self, repo_id, revision=None, cache_dir=None, allow_patterns=None, **kw):
        printed = self.capsys.readouterr().out if self.capsys else ""
        self.calls.append(("snapshot_download", repo_id, sorted(allow_patterns), printed))
        return str(populate_cache(Path(cache_dir), repo_id, self.src, set(allow_patterns)))


def test_without_permission_a_hub_name_is_refused_and_nothing_is_called(monkeypatch, saved, tmp_path):
    fake = FakeHub(monkeypatch, saved)
    with pytest.raises(zoo.DownloadNotAllowedError) as e:
        load_pretrained("gpt2", cache_dir=tmp_path)
    msg = str(e.value)
    for part in ("downloads are off", "allow_download=True", "WORKBENCH_ALLOW_DOWNLOAD=1",
                 "from_hf('/path/to/folder')", "available: [", "'docs-byte'"):
        assert part in msg
    assert isinstance(e.value, ValueError)
    with pytest.raises(zoo.DownloadNotAllowedError, match="downloads are off"):
        from_hf(REPO, cache_dir=tmp_path)
    monkeypatch.setenv(zoo.ENV_VAR, "1")  # an explicit False wins over the environment
    with pytest.raises(zoo.DownloadNotAllowedError):
        load_pretrained(REPO, allow_download=False, cache_dir=tmp_path)
    monkeypatch.setenv(zoo.ENV_VAR, "perhaps")
    with pytest.raises(ValueError, match="WORKBENCH_ALLOW_DOWNLOAD='perhaps' is not understood"):
        load_pretrained(REPO, cache_dir=tmp_path)
    assert fake.calls == []
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_with_permission_the_size_is_printed_then_downloaded_then_loaded(monkeypatch, capsys, saved, tmp_path, how):
    fake = FakeHub(monkeypatch, saved, capsys=capsys,
                   extra={"model.safetensors": 166_000_000,  # the size the hub lists for the real pythia-70m
                          "pytorch_model.bin": 166_000_000, "onnx/model.onnx": 10**8, "modeling_x.py": 10})
    if how == "environment":
        monkeypatch.setenv(zoo.ENV_VAR, "1")
    m = load_pretrained(REPO, allow_download=True if how == "argument" else None, cache_dir=tmp_path)
    (info, (dl, repo, patterns, printed)) = fake.calls
    assert info == ("model_info", REPO, True) and (dl, repo) == ("snapshot_download", REPO)
    assert printed.startswith(f"downloading {REPO}: 166 MB (model.safetensors, tokenizer.json, ")
    assert "model.safetensors" in patterns and "config.json" in patterns and "tokenizer.json" in patterns
    assert not any(p.endswith((".bin", ".onnx", ".py")) for p in patterns)  # never pickles, never remote code
    assert isinstance(m, HFModel) and m.name == REPO and m.tokenizer.vocab_size == F.TOKENIZER_VOCAB
    ids = torch.tensor([m.tokenizer.encode("def f(x): return x")])
    torch.testing.assert_close(m(ids).logits, from_hf(saved)(ids).logits)


def test_a_cached_model_loads_offline_without_permission(monkeypatch, saved, tmp_path):
    populate_cache(tmp_path, REPO, saved)
    fake = FakeHub(monkeypatch, saved)
    m = load_pretrained(REPO, cache_dir=tmp_path)
    m2 = from_hf(REPO, cache_dir=tmp_path, dtype="bfloat16")
    assert fake.calls == [] and m.name == REPO
    assert next(m2.parameters()).dtype == torch.bfloat16
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(m(ids).logits, from_hf(saved)(ids).logits)


def test_a_partial_cache_counts_as_not_cached(monkeypatch, saved, tmp_path):
    populate_cache(tmp_path, REPO, saved, names={"config.json", "tokenizer.json"})  # weights never arrived
    fake = FakeHub(monkeypatch, saved)
    with pytest.raises(zoo.DownloadNotAllowedError):
        load_pretrained(REPO, cache_dir=tmp_path)
    assert fake.calls == []


def test_a_repo_with_only_pickle_weights_is_refused_before_downloading(monkeypatch, saved, tmp_path):
    fake = FakeHub(monkeypatch, saved, extra={"pytorch_model.bin": 10**8}, weights=False)
    with pytest.raises(zoo.UnsafeWeightsError, match=r"only pickle weights \(pytorch_model.bin\).*never unpickles"):
        load_pretrained("some/old-model", allow_download=True, cache_dir=tmp_path)
    assert [c[0] for c in fake.calls] == ["model_info"]


def test_offline_with_permission_says_how_to_pass_a_local_folder(monkeypatch, tmp_path):
    def unreachable(*a, **k):
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(hub, "model_info", unreachable)
    monkeypatch.setattr(hub, "snapshot_download", lambda *a, **k: pytest.fail("downloaded while offline"))
    with pytest.raises(zoo.HubError, match=r"cannot reach the Hugging Face hub.*no route.*from_hf\('pythia-70m'\)"):
        load_pretrained(REPO, allow_download=True, cache_dir=tmp_path)


def test_file_choice_for_sharded_and_mixed_repos():
    names = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
             "model-00002-of-00002.safetensors", "consolidated.safetensors", "pytorch_model.bin", "onnx/x.safetensors"]
    st, pickles = zoo.split_weights(names)
    assert st == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert pickles == ["pytorch_model.bin"]
    assert zoo.split_weights(["model.safetensors", "model.fp16.safetensors"])[0] == ["model.safetensors"]
    assert zoo.format_size(166_000_000) == "166 MB" and zoo.format_size(2_500_000_000) == "2.5 GB"
    assert zoo.looks_like_hub_name("gpt2") and zoo.looks_like_hub_name(REPO)
    assert not any(map(zoo.looks_like_hub_name, ["./m", "/a/b", "a/b/c", "~/m"]))


def test_shipped_names_stay_offline_and_do_not_touch_the_hub(monkeypatch, saved):
    fake = FakeHub(monkeypatch, saved)
    monkeypatch.setenv(zoo.ENV_VAR, "1")
    m = load_pretrained("docs-byte-draft")
    assert m.config.vocab_size == 258 and fake.calls == []
