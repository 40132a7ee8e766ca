"""Parameter widgets built from a pretext's ``PARAMETERS`` spec: one definition for every dock.

:func:`pretext_param_widget` turns the :class:`~napari_ssl.pretext._base.ParamSpec` tuple of a pretext class
into a magicgui :class:`~magicgui.widgets.Container` of labelled spin boxes, check boxes and combo boxes
(defaults, limits and tooltips from the spec). The Pretext explorer and the Pretrain dock both use it, so a
parameter added to a pretext shows up in both without touching the GUI.

>>> w = pretext_param_widget("rubik")          # doctest: +SKIP
>>> w.values()                                 # doctest: +SKIP
{'grid': 2, 'n_permutations': 100, 'gap': 10, 'p_rotate': 0.5}
>>> w.changed.connect(lambda _: print(w.values()))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from magicgui import widgets

__all__ = ["PretextParamWidget", "pretext_class", "pretext_param_widget"]

#: spin-box ceiling for parameters whose spec has no upper limit
_NO_MAX_INT = 100_000
_NO_MAX_FLOAT = 1e6


def pretext_class(pretext_name: str) -> type:
    """The task class registered under ``pretext_name`` (:mod:`napari_ssl.pretext.registry`)."""
    from napari_ssl.pretext import registry

    return registry.get(pretext_name).task_class()


def _label(name: str) -> str:
    return name.replace("_", " ")


def _spec_widget(spec: Any) -> widgets.ValueWidget:
    """One magicgui value widget for one ``ParamSpec``."""
    common: dict[str, Any] = {"name": spec.name, "label": _label(spec.name), "tooltip": spec.help or None}
    default = spec.default
    if isinstance(default, (tuple, list)):  # per-axis defaults: the widget edits one value for all axes
        default = default[0] if len(set(default)) == 1 else default[-1]
    if spec.choices:
        return widgets.ComboBox(choices=tuple(spec.choices), value=default, **common)
    if spec.type is bool:
        return widgets.CheckBox(value=bool(default), **common)
    if spec.type is int:
        lo = int(spec.min) if spec.min is not None else -_NO_MAX_INT
        hi = int(spec.max) if spec.max is not None else _NO_MAX_INT
        return widgets.SpinBox(value=int(default), min=lo, max=hi, **common)
    if spec.type is float:
        lo = float(spec.min) if spec.min is not None else -_NO_MAX_FLOAT
        hi = float(spec.max) if spec.max is not None else _NO_MAX_FLOAT
        span = hi - lo
        step = 0.05 if span <= 1.0 else (0.5 if span <= 100 else 1.0)
        return widgets.FloatSpinBox(value=float(default), min=lo, max=hi, step=step, **common)
    return widgets.LineEdit(value=str(default), **common)


class PretextParamWidget(widgets.Container):
    """The parameters of one pretext as labelled widgets.

    Attributes
    ----------
    pretext_name : str
        The pretext these parameters belong to.
    specs : tuple of ParamSpec
        The pretext class's ``PARAMETERS``.
    changed : Signal
        magicgui's container signal, emitted when any parameter changes.
    """

    def __init__(self, pretext_name: str, **kwargs: Any) -> None:
        cls = pretext_class(pretext_name)
        self.pretext_name = pretext_name
        self.specs = tuple(getattr(cls, "PARAMETERS", ()))
        super().__init__(widgets=[_spec_widget(s) for s in self.specs], labels=True, **kwargs)

    def values(self) -> dict[str, Any]:
        """Constructor keyword arguments for the pretext, typed as the spec says."""
        out: dict[str, Any] = {}
        for spec in self.specs:
            value = self[spec.name].value
            if spec.type is int and not spec.choices:
                value = int(value)
            elif spec.type is float and not spec.choices:
                value = float(value)
            elif spec.type is bool:
                value = bool(value)
            out[spec.name] = value
        return out

    def set_values(self, values: dict[str, Any]) -> None:
        """Set several parameters at once (unknown keys raise ``KeyError``); one ``changed`` per widget."""
        for key, value in values.items():
            self[key].value = value

    def reset(self) -> None:
        """Back to the spec defaults."""
        for spec in self.specs:
            self[spec.name].value = _spec_widget(spec).value

    def make_pretext(self) -> Any:
        """A pretext instance built from the current values (its constructor validates them)."""
        return pretext_class(self.pretext_name)(**self.values())


def pretext_param_widget(pretext_name: str, **kwargs: Any) -> PretextParamWidget:
    """A magicgui Container editing the parameters of ``pretext_name``.

    Parameters
    ----------
    pretext_name : str
        Any registered pretext (:func:`napari_ssl.pretext.registry.names`).
    **kwargs
        Passed to :class:`magicgui.widgets.Container` (``label``, ``visible``, ...).

    Returns
    -------
    PretextParamWidget
        ``.values() -> dict`` of constructor keywords, ``.changed`` signal, ``.native`` QWidget.
    """
    return PretextParamWidget(pretext_name, **kwargs)
