"""Run paths that exist only on a GPU (skipped without one): float16 with its gradient scaler, saved and
resumed, and DistributedDataParallel over nccl with SyncBatchNorm. (On a machine with a GPU the rest of
the suite's runs train on it too.)"""

import copy

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import botnet
from botnet.checkpoints import load_training_state
from botnet.tasks import TrainConfig, train
from botnet.training import engine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_float16_trains_with_its_gradient_scaler_and_resumes_from_its_scale(tmp_path, monkeypatch):
    """A GPU without bfloat16 trains under float16 autocast with a GradScaler; last.pt keeps the scaler's
    state, and the resumed run starts from that state, not from a fresh scale."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    run_dir = tmp_path / "run"
    real_epoch = engine._Loop.train_epoch

    def stop_at_second_epoch(loop, epoch, *args):
        assert loop.amp_dtype == torch.float16 and loop.scaler is not None
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(loop, epoch, *args)

    monkeypatch.setattr(engine._Loop, "train_epoch", stop_at_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(epochs=3, batch_size=128, amp=True, output_dir=str(run_dir)))
    saved = load_training_state(str(run_dir / "last.pt")).scaler
    assert saved is not None and saved["scale"] > 0

    loaded = []
    real_load = torch.amp.GradScaler.load_state_dict

    def spy_load(scaler, state):
        loaded.append(dict(state))
        return real_load(scaler, state)

    monkeypatch.setattr(torch.amp.GradScaler, "load_state_dict", spy_load)
    monkeypatch.setattr(engine._Loop, "train_epoch", real_epoch)
    summary = train(resume=str(run_dir / "last.pt"))
    assert loaded == [saved]
    assert summary["val_top1"] > 50  # three short epochs on the digits: far above chance (10%)


def test_ddp_over_nccl_with_sync_batchnorm_trains_like_one_process(tmp_path):
    """A BoTNet converted to SyncBatchNorm and wrapped in DistributedDataParallel over nccl (one process:
    the machine's one GPU), as a torchrun run builds it, computes the plain model's outputs, gradients and
    running statistics under bfloat16 autocast."""
    dist.init_process_group("nccl", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = botnet.create_model("botnet_tiny", num_classes=5, zero_init_last=False).cuda().train()
        synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain))
        wrapped = DistributedDataParallel(synced, device_ids=[0])
        x = torch.randn(4, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
        outputs = []
        for model in (plain, wrapped):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x)
            out.float().square().mean().backward()
            outputs.append(out.float())
        torch.testing.assert_close(outputs[1], outputs[0], atol=1e-2, rtol=1e-2)
        for (name, a), b in zip(plain.named_parameters(), synced.parameters()):
            torch.testing.assert_close(b.grad, a.grad, atol=1e-3, rtol=2e-2, msg=name)
        for (name, a), b in zip(plain.named_buffers(), synced.buffers()):
            torch.testing.assert_close(b.float(), a.float(), atol=1e-3, rtol=1e-3, msg=name)
    finally:
        dist.destroy_process_group()
