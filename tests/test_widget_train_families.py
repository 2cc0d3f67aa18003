"""The train widget for any model family: the loss plot draws whatever losses arrive, the
Family box shows each family's own settings, and config() builds a valid configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

from napari_synthgen import registry
from napari_synthgen.families.base import Family
from napari_synthgen.registry import make_config
from napari_synthgen.training import events
from napari_synthgen.training.config import ConfigError, TrainConfig
from toy_family import TOY

PLUGIN = "napari-synthgen"
pytestmark = pytest.mark.gui


# ------------------------------------- two toy families: tests/toy_family and a rich one
@dataclass
class RichSettings:
    """One setting of each kind the dock builds a widget for, and one it cannot show."""

    schedule: str = field(default="cosine", metadata={"choices": ("cosine", "constant")})
    prediction: Literal["v_prediction", "epsilon"] = "v_prediction"
    steps_preview: int = 10
    ema_decay: float = 0.999
    gamma: float | None = 5.0
    use_ema: bool = True
    note: str = "x"
    overrides: dict[str, Any] = field(default_factory=dict)


class RichFamily(Family):
    name = "rich"
    settings = RichSettings
    loss_names = ("mse",)
    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-4, "batch_size": 8}


@pytest.fixture
def two_families():
    registered = [registry.register(TOY), registry.register(RichFamily())]
    yield registered
    for fam in registered:
        registry.unregister(fam.name)


def _widget(viewer):
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    return w


# --------------------------------------------------------------------------- the loss plot
def test_the_plot_shows_whatever_losses_arrive(make_napari_viewer, two_families) -> None:
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme

    viewer = make_napari_viewer()
    w = _widget(viewer)
    w.family.value = "toy"
    # the trainer's JSON lines, read back as typed events, as the supervisor yields them
    w._on_event(events.from_json(events.Started(
        step=0, total=30, config={"family": "toy"}, device="cpu", precision="fp32").dumps()))
    for step in range(1, 31):  # names the plot never heard of, one negative, one arriving late
        losses = {"extra": -0.5 + 0.01 * step, "scale": 0.2, "l1": 30.0 / step}
        if step > 10:
            losses["late"] = 1e-3
        w._on_event(events.from_json(events.Progress(step=step, total=30,
                                                     losses=losses).dumps()))
    w._on_event(events.Finished(step=30, reason="completed", total=30))
    # every loss is drawn, known ones first in the family's order, then the others as they came
    assert [line.get_label() for line in w.plot.ax.lines] == ["l1", "scale", "extra", "late"]
    assert [t.get_text() for t in w.plot.ax.get_legend().get_texts()] == [
        "l1", "scale", "extra", "late"]
    assert w.plot.series["l1"][1][0] == 30.0, "losses are plotted as reported, not rescaled"
    assert len(w.plot.series["late"][0]) == 20
    assert w.plot.ax.get_yscale() == "symlog"
    low, high = w.plot.ax.get_ylim()
    assert low < -0.4 and high >= 30.0, "negative and large losses both fit"
    assert len({line.get_color() for line in w.plot.ax.lines}) == 4
    # still in napari's theme
    viewer.theme = "light"
    assert to_hex(w.plot.ax.get_facecolor()) == get_theme("light").foreground.as_hex()
    assert len(w.plot.ax.lines) == 4 and w.plot.ax.get_yscale() == "symlog"
    assert w.progress.value == 30 and "completed" in w.eta.value


def test_a_pix2pix_run_plots_its_four_losses_in_order(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    w = _widget(viewer)
    w._on_event(events.Progress(step=1, total=2, losses={
        "D_fake": 0.2, "D_real": 0.3, "G_L1": 40.0, "G_GAN": 1.1}))
    w.plot.draw()
    assert w.plot.names() == ["G_GAN", "G_L1", "D_real", "D_fake"]


def test_long_runs_are_drawn_as_block_means(make_napari_viewer) -> None:
    from napari_synthgen.widgets.train import PLOT_MAX_POINTS

    viewer = make_napari_viewer()
    w = _widget(viewer)
    n = 3 * PLOT_MAX_POINTS + 7
    for step in range(n):
        w.plot.add(step, {"loss": float(step % 2)})
    w.plot.draw()
    (line,) = w.plot.ax.lines
    assert len(line.get_xdata()) <= PLOT_MAX_POINTS + 1
    assert abs(float(line.get_ydata()[:-1].mean()) - 0.5) < 0.2  # means, not every 3rd step
    assert line.get_xdata()[-1] > n - 10  # the newest steps are shown


# --------------------------------------------------------------------------- family settings
def test_switching_family_shows_its_settings_and_builds_its_config(
        make_napari_viewer, two_families, isbi_small) -> None:
    viewer = make_napari_viewer()
    w = _widget(viewer)
    w.data.value = str(isbi_small)
    assert list(w.family.choices) == list(registry.names())
    assert {"pix2pix", "toy", "rich"} <= set(w.family.choices)
    for name in registry.names():
        w.family.value = name
        fam = registry.get(name)
        shown = [n for n, box in w.family_boxes.items() if not box.native.isHidden()]
        assert shown == [name], f"only the {name} settings are shown"
        assert name in w.family_section.text()
        cfg = w.config()
        assert isinstance(cfg, TrainConfig) and cfg.family == name
        assert isinstance(cfg.settings, fam.settings)
        cfg.validate()  # a valid configuration of that family
        assert set(w.family_settings()) <= set(fam.setting_names())
        assert w.plot.order == fam.loss_names

    # the toy's settings and its defaults of common settings
    w.family.value = "toy"
    assert set(w.setting_widgets["toy"]) == {"width"}  # only what its CLI offers
    w.setting("width").value = 7
    cfg = w.config()
    assert (cfg.width, cfg.smooth, cfg.encoding, cfg.tile) == (7, 0.0, "onehot", 64)
    with pytest.raises(AttributeError):
        _ = w.netG  # pix2pix's widgets belong to pix2pix only

    # back to pix2pix: its defaults again, and the dock's own choices stay
    w.steps.value = 123
    w.family.value = "pix2pix"
    cfg = w.config()
    assert (cfg.encoding, cfg.tile, cfg.steps, cfg.ngf) == ("rgb", 256, 123, 32)
    assert "width" not in w.family_settings()
    with pytest.raises(KeyError, match="pix2pix family has no setting 'width'"):
        w.setting("width")

    # every kind of setting: choices, Literal, int, float (exact), optional, bool, str
    w.family.value = "rich"
    widgets = w.setting_widgets["rich"]
    assert set(widgets) == {f.name for f in dataclasses.fields(RichSettings)} - {"overrides"}
    assert list(widgets["schedule"].choices) == ["cosine", "constant"]
    assert list(widgets["prediction"].choices) == ["v_prediction", "epsilon"]
    assert widgets["ema_decay"].value == pytest.approx(0.999, abs=1e-9)
    assert (w.lr.value, w.batch.value) == (pytest.approx(1e-4), 8)  # the family's defaults
    assert w.config().to_dict()["gamma"] == 5.0
    widgets["gamma"].value = ""
    widgets["schedule"].value = "constant"
    widgets["use_ema"].value = False
    cfg = w.config()
    assert (cfg.gamma, cfg.schedule, cfg.use_ema, cfg.overrides) == (None, "constant", False, {})
    widgets["gamma"].value = "lots"
    with pytest.raises(ConfigError, match="rich setting gamma: 'lots' is not a float"):
        w.config()
    widgets["gamma"].value = "2.5"
    assert w.config().gamma == 2.5
    w.family.value = "pix2pix"
    assert (w.lr.value, w.batch.value) == (pytest.approx(2e-4), 4)


def test_the_pix2pix_dock_builds_the_configuration_it_always_did(make_napari_viewer,
                                                                    isbi_small) -> None:
    viewer = make_napari_viewer()
    w = _widget(viewer)
    w.data.value = str(isbi_small)
    assert w.family.value == "pix2pix"
    before = make_config(  # the settings the pix2pix-only dock passed
        data=[str(isbi_small)], val=[], out=str(w.out.value), family="pix2pix", steps=2000,
        tile=256, batch_size=4, netG="unet_256", ngf=32, device="auto", stride=None, lr=2e-4,
        lambda_l1=100.0, gan_mode="lsgan", flips=True, rot90=True, norm="batch", netD="basic",
        ndf=64, precision="auto", checkpoint_every=500, sample_every=100, seed=0,
        encoding="rgb", log_every=1)
    assert w.config().to_dict() == before.to_dict()
    assert set(w.setting_widgets["pix2pix"]) == {o.key for o in registry.get("pix2pix").cli_options}
    w.netG.value, w.gan_mode.value, w.dropout.value = "resnet_6blocks", "hinge", False
    cfg = w.config()
    assert (cfg.netG, cfg.gan_mode, cfg.dropout) == ("resnet_6blocks", "hinge", False)


def test_a_diffusion_run_from_random_weights_on_few_images_is_advised_to_fine_tune(
        make_napari_viewer) -> None:
    """The family's advice reaches the user as a notification when the run starts (as it
    does on the CLI): not for a fine-tune, a resumed run or a larger labelled set."""
    from napari.utils.notifications import notification_manager

    w = _widget(make_napari_viewer())

    def notes(config: dict[str, Any], n_images: int, resumed: int = 0) -> list[str]:
        n = len(notification_manager.records)
        w._on_event(events.from_json(events.Started(
            step=resumed, total=10, config={"family": "diffusion", **config}, device="cpu",
            precision="fp32", n_train_images=n_images, resumed_from=resumed).dumps()))
        return [str(r.message) for r in notification_manager.records[n:]]

    (note,) = notes({}, 5)
    assert "random weights on 5 labelled image(s)" in note
    assert "--init-from demo-diffusion" in note
    assert notes({"init_from": "demo-diffusion"}, 5) == []
    assert notes({}, 5, resumed=3) == []
    assert notes({}, 40) == []
