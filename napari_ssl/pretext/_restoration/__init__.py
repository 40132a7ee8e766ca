"""What the restoration pretexts share (context restoration, Models Genesis: corrupt a 3D patch, the whole U-Net gives
the clean one back): the network hooks (:mod:`.network`, torch), the network's answer in the explorer
(:mod:`.answer`) and its drawing (:mod:`.explore`). Not a pretext itself (its name starts with ``_``: the registry
skips it); importing it imports neither torch nor Qt.
"""

from __future__ import annotations

from napari_ssl.pretext.registry import AnswerSpec

__all__ = ["HOOKS", "RESTORATION_ANSWER"]

_HERE = __name__
#: the network hooks of a restoration pretext
HOOKS = f"{_HERE}.network:RestorationHooks"
#: what a restoration network answers (context restoration, Models Genesis): the restored scan beside the
#: corrupted one and the original, their PSNRs
RESTORATION_ANSWER = AnswerSpec(compute=f"{_HERE}.answer:answer_restoration",
                                describe=f"{_HERE}.answer:describe_restoration",
                                draw=f"{_HERE}.explore:restoration_specs", canvas=f"{_HERE}.explore:restoration_text")
