"""Detectors and FPN backbones: builders, torchvision parity, training steps at several sizes, COCO metrics."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

import botnet
from botnet.detection import (
    botnet_fpn_backbone,
    coco_metrics,
    create_detector,
    detections_to_coco,
    fasterrcnn_botnet50_fpn,
    maskrcnn_botnet50_fpn,
)
from botnet.layers.blocks import BoTBlock
from botnet.models import create_model

# Small images and few proposals keep the full botnet50 detectors fast on a CPU.
SMALL = dict(min_size=160, max_size=256, proposals=(2000, 2000, 200, 100), box_detections_per_img=20)


def _targets(images: list[torch.Tensor], with_masks: bool) -> list[dict[str, torch.Tensor]]:
    targets = []
    for i, image in enumerate(images):
        _, h, w = image.shape
        boxes = torch.tensor([[4.0, 6.0, w / 2, h / 2], [w / 3, h / 4, w - 3, h - 5]])
        target = dict(boxes=boxes, labels=torch.tensor([1, 2 + i % 2]))
        if with_masks:
            masks = torch.zeros(2, h, w, dtype=torch.uint8)
            for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
                m[y0:y1, x0:x1] = 1
            target["masks"] = masks
        targets.append(target)
    return targets


@pytest.mark.parametrize("builder", [fasterrcnn_botnet50_fpn, maskrcnn_botnet50_fpn])
def test_detector_trains_and_predicts_at_two_aspect_ratios(builder):
    torch.manual_seed(0)
    model = builder(num_classes=4, **SMALL)
    assert isinstance(model, MaskRCNN if builder is maskrcnn_botnet50_fpn else FasterRCNN)
    assert model.roi_heads.detections_per_img == 20 and model.transform.max_size == 256
    assert any(isinstance(m, BoTBlock) for m in model.backbone.body.modules())
    with_masks = isinstance(model, MaskRCNN)
    # A wide batch and a tall one; padded to multiples of 32, c5 is 5x8 and 8x5 (odd sides).
    for sizes in ([(150, 237), (160, 200)], [(256, 161)]):
        images = [torch.rand(3, h, w) for h, w in sizes]
        model.train()
        losses = model(images, _targets(images, with_masks))
        expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
        assert set(losses) == expected | ({"loss_mask"} if with_masks else set())
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        model.zero_grad()
        loss.backward()
        bot = next(m for m in model.backbone.body.modules() if isinstance(m, BoTBlock))
        assert bot.mhsa.qkv.weight.grad is not None  # on the graph (zero at init: the block's last BN starts at 0)
        assert bot.bn3.weight.grad.abs().sum() > 0
        model.eval()
        with torch.no_grad():
            outputs = model(images)
        for output, (h, w) in zip(outputs, sizes):
            boxes = output["boxes"]
            assert boxes.shape[1] == 4 and len(boxes) == len(output["scores"]) == len(output["labels"])
            assert (boxes[:, 2] <= w + 1e-3).all() and (boxes[:, 3] <= h + 1e-3).all()  # in original coordinates
            if with_masks:
                assert output["masks"].shape[1:] == (1, h, w)


def test_named_builders_cover_the_paper_backbones():
    names = [
        f"{kind}_{bb}_fpn"
        for kind in ("fasterrcnn", "maskrcnn")
        for bb in ("resnet50", "botnet50", "botnet101", "botnet152", "botnet200")
    ]
    for name in names:
        assert callable(getattr(botnet.detection, name)), name
    # Depth check without building all ten: botnet101 has 23 blocks in c4.
    model = botnet.detection.maskrcnn_botnet101_fpn(num_classes=3)
    assert len(model.backbone.body.layer3) == 23
    assert model.transform.min_size == (800,)  # torchvision's defaults pass through


def test_fpn_backbone_levels_channels_and_strides():
    fpn = botnet_fpn_backbone("botnet50", img_size=256)
    assert fpn.out_channels == 256
    features = fpn(torch.rand(1, 3, 224, 160))
    assert list(features) == ["0", "1", "2", "3", "pool"]
    # Strides 4, 8, 16, 32, and 64 for the max-pooled extra level.
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(56, 40), (28, 20), (14, 10), (7, 5), (4, 3)]
    assert [f.shape[1] for f in features.values()] == [256] * 5
    fpn = botnet_fpn_backbone("botnet_mini", returned_layers=(2, 3, 4), out_channels=32, img_size=128)
    assert list(fpn(torch.rand(2, 3, 96, 128))) == ["0", "1", "2", "pool"]


def test_resnet50_fpn_matches_torchvision_with_the_same_weights(tmp_path):
    """An independent reference: torchvision's own resnet_fpn_backbone, same weights, same outputs."""
    torch.manual_seed(0)
    reference = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=3)
    resnet = torchvision.models.resnet50()
    for m in resnet.modules():  # non-trivial statistics and negative gains, so norm placement matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(-1.5, 1.5)
    path = tmp_path / "resnet50.pth"
    torch.save(resnet.state_dict(), path)
    reference.body.load_state_dict(
        {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}, strict=False
    )
    ours = botnet_fpn_backbone("resnet50", backbone_weights=path)
    ours.fpn.load_state_dict(reference.fpn.state_dict())
    assert isinstance(ours.body.bn1, FrozenBatchNorm2d)
    x = torch.rand(1, 3, 160, 224, dtype=torch.float64)
    with torch.no_grad():  # float64: layout-dependent float32 rounding cannot hide a real difference
        expected, got = reference.double()(x), ours.double()(x)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-9, atol=1e-9)
    trainable = {n.split(".")[0] for n, p in ours.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}  # torchvision's default of 3 trainable stages


def test_resnet50_fpn_trains_like_torchvision():
    """Train mode with BatchNorm2d (no pretrained weights): same outputs and the same running statistics
    as torchvision's backbone; catches a stem whose layers run in another order than the classifier's."""
    torch.manual_seed(0)
    reference = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, trainable_layers=5, norm_layer=nn.BatchNorm2d
    )
    ours = botnet_fpn_backbone("resnet50")
    for m in reference.body.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(-1.5, 1.5)
    ours.body.load_state_dict(reference.body.state_dict())
    ours.fpn.load_state_dict(reference.fpn.state_dict())
    x = torch.rand(2, 3, 96, 128, dtype=torch.float64)
    expected, got = reference.double().train()(x), ours.double().train()(x)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.body.bn1.running_mean, reference.body.bn1.running_mean)
    assert [n for n, _ in ours.body.named_children()][:4] == ["conv1", "bn1", "act1", "maxpool"]


def test_botnet_backbone_weights_fill_resnet_parts_and_keep_bot_blocks_trainable(tmp_path):
    resnet = torchvision.models.resnet50()
    path = tmp_path / "r50.pth"
    torch.save(resnet.state_dict(), path)
    fpn = botnet_fpn_backbone("botnet50", backbone_weights=path, trainable_layers=1)
    torch.testing.assert_close(fpn.body.layer3[0].conv1.weight, resnet.layer3[0].conv1.weight)
    # Pretrained parts get frozen norms; the BoT blocks start from scratch and keep trainable BatchNorm2d.
    assert isinstance(fpn.body.layer3[0].bn1, FrozenBatchNorm2d)
    bot = fpn.body.layer4[0]
    assert isinstance(bot, BoTBlock) and type(bot.bn3) is nn.BatchNorm2d
    fpn.train()
    out = fpn(torch.rand(2, 3, 128, 96))
    sum(o.sum() for o in out.values()).backward()
    assert bot.bn3.weight.grad.abs().sum() > 0  # starts at zero (zero_init_last) and can leave it
    assert all(p.requires_grad for p in fpn.body.layer4.parameters())
    assert not any(p.requires_grad for p in fpn.body.layer3.parameters())
    with pytest.raises(ValueError, match="layer4 of botnet50, which holds BoT blocks"):
        botnet_fpn_backbone("botnet50", backbone_weights=path, trainable_layers=0)
    with pytest.raises(ValueError, match="trainable_layers must be an int in 0..5, got 6"):
        botnet_fpn_backbone("botnet50", trainable_layers=6)
    with pytest.raises(ValueError, match="trainable_layers=3 freezes randomly initialised stages"):
        botnet_fpn_backbone("botnet50", trainable_layers=3)
    with pytest.raises(ValueError, match=r"returned_layers .* got \(0, 2\)"):
        botnet_fpn_backbone("botnet50", returned_layers=(0, 2))


def test_create_detector_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="unknown detector 'retinanet'"):
        create_detector("retinanet", "botnet50", 3)
    with pytest.raises(ValueError, match="num_classes counts the background too.*got 1"):
        create_detector("maskrcnn", "botnet50", 1)
    with pytest.raises(ValueError, match="one size per pyramid level \\(5"):
        create_detector("maskrcnn", "botnet_mini", 3, anchor_sizes=(8, 16))
    with pytest.raises(ValueError, match="unknown model"):
        create_detector("maskrcnn", "botnet51", 3)
    with pytest.raises(ValueError, match=r"positive ints \(pixels\), got \(8, 0, 32, 64, 128\)"):
        create_detector("maskrcnn", "botnet_mini", 3, anchor_sizes=(8, 0, 32, 64, 128))
    with pytest.raises(ValueError, match=r"proposals must be four positive ints .* got \(600, 300, 300\)"):
        create_detector("maskrcnn", "botnet_mini", 3, proposals=(600, 300, 300))
    with pytest.raises(ValueError, match="give proposals or torchvision's"):
        create_detector("maskrcnn", "botnet_mini", 3, proposals=(600, 300, 300, 150), rpn_pre_nms_top_n_test=10)


def test_proposals_are_torchvision_s_four_rpn_counts():
    """create_detector takes the settings' names (detector, fpn_channels, proposals): the four proposal counts
    reach torchvision's RPN as its rpn_{pre,post}_nms_top_n_{train,test}."""
    ours = create_detector("maskrcnn", "botnet_mini", 3, fpn_channels=16, proposals=(600, 300, 200, 100))
    theirs = create_detector("maskrcnn", "botnet_mini", 3, fpn_channels=16, rpn_pre_nms_top_n_train=600,
                             rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100)  # fmt: skip
    assert ours.rpn._pre_nms_top_n == theirs.rpn._pre_nms_top_n == dict(training=600, testing=200)
    assert ours.rpn._post_nms_top_n == theirs.rpn._post_nms_top_n == dict(training=300, testing=100)
    assert ours.backbone.out_channels == 16


def test_returned_layers_get_matching_default_anchors():
    model = create_detector(
        "fasterrcnn", "botnet_mini", 3, returned_layers=(2, 3, 4), img_size=128, min_size=128, max_size=160
    )
    assert model.rpn.anchor_generator.sizes == ((64,), (128,), (256,), (512,))  # 8 x stride, torchvision's rule
    model.eval()
    with torch.no_grad():
        assert len(model([torch.rand(3, 128, 150)])) == 1


def _gt() -> dict:
    masks = torch.zeros(2, 40, 60, dtype=torch.uint8)
    masks[0, 5:20, 10:30] = 1
    masks[1, 22:38, 30:58] = 1
    annotations = []
    for i, m in enumerate(masks):
        ys, xs = torch.nonzero(m, as_tuple=True)
        x0, y0 = int(xs.min()), int(ys.min())
        rle = detections_to_coco(
            dict(
                boxes=torch.zeros(1, 4),
                scores=torch.ones(1),
                labels=torch.ones(1, dtype=torch.int64),
                masks=m[None, None].float(),
            ),
            1,
            [7],
        )[0]["segmentation"]
        annotations.append(
            dict(
                id=i + 1,
                image_id=1,
                category_id=7 + 2 * i,
                bbox=[x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
                area=int(m.sum()),
                iscrowd=0,
                segmentation=rle,
            )
        )
    return dict(
        images=[dict(id=1, width=60, height=40)],
        annotations=annotations,
        categories=[dict(id=7, name="a"), dict(id=9, name="b")],
    ), masks


def test_coco_metrics_perfect_empty_and_wrong_class():
    gt, masks = _gt()
    boxes = torch.tensor([[10.0, 5.0, 30.0, 20.0], [30.0, 22.0, 58.0, 38.0]])
    perfect = dict(
        boxes=boxes, scores=torch.tensor([0.9, 0.8]), labels=torch.tensor([1, 2]), masks=masks[:, None].float()
    )
    results = detections_to_coco(perfect, 1, [7, 9])
    assert [r["bbox"] for r in results] == [[10.0, 5.0, 20.0, 15.0], [30.0, 22.0, 28.0, 16.0]]
    metrics = coco_metrics(gt, results)
    for key in ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75"):
        assert metrics[key] == pytest.approx(100.0), key
    assert metrics["bbox_APl"] == -100.0  # no large objects: pycocotools' -1, in percent
    assert all(v == 0.0 for v in coco_metrics(gt, []).values())
    swapped = dict(perfect, labels=torch.tensor([2, 1]))
    assert coco_metrics(gt, detections_to_coco(swapped, 1, [7, 9]))["bbox_AP"] == pytest.approx(0.0)
    # One of the two objects found: AP 50 (each class is averaged separately, one class scores 100).
    half = {k: v[:1] for k, v in perfect.items()}
    assert coco_metrics(gt, detections_to_coco(half, 1, [7, 9]), ("bbox",))["bbox_AP"] == pytest.approx(50.0)


def test_mask_ap_by_size_uses_mask_area():
    """A thin L-shaped false positive: small by mask area (156 px), medium by box (60 x 40). Ranked first,
    it halves class 7's precision among small masks: segm_APs = (50 + 100) / 2; it does not count among
    small boxes, so bbox_APs stays 100."""
    gt, masks = _gt()
    wrong = torch.zeros(1, 40, 60)
    wrong[0, 0:2, :] = 1
    wrong[0, :, 0:2] = 1
    detections = dict(
        boxes=torch.tensor([[10.0, 5.0, 30.0, 20.0], [30.0, 22.0, 58.0, 38.0], [0.0, 0.0, 60.0, 40.0]]),
        scores=torch.tensor([0.9, 0.8, 0.95]),
        labels=torch.tensor([1, 2, 1]),
        masks=torch.cat([masks[:, None].float(), wrong[None]]),
    )
    metrics = coco_metrics(gt, detections_to_coco(detections, 1, [7, 9]))
    assert metrics["segm_APs"] == pytest.approx(75.0)
    assert metrics["bbox_APs"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("backbone", "strides"), [("botnet50", (4, 8, 16, 32, 64)), ("botnet50_s1", (4, 8, 16, 16, 32))]
)
def test_default_anchors_follow_the_backbones_strides(backbone, strides):
    """Anchors are 8 x each level's stride, read from the backbone's feature_info: the S1 models keep c5 at
    stride 16, so their c5 anchors are 128 px, not the 256 px of a stride-32 c5."""
    model = create_detector("fasterrcnn", backbone, 3, img_size=64)
    assert model.backbone.feature_strides == strides
    assert model.rpn.anchor_generator.sizes == tuple((8 * s,) for s in strides)
    entry = {i["module"]: i["reduction"] for i in create_model(backbone).feature_info}
    assert strides[:4] == tuple(entry[f"layer{i}"] for i in (1, 2, 3, 4))
