"""Policies for skillcell cells: scripted experts now; behaviour cloning and RL build on them."""

from skillcell.policies.peg_insert import PegInsertExpert
from skillcell.policies.scripted import ScriptedExpert, WeldSeamExpert, make_expert

__all__ = ["PegInsertExpert", "ScriptedExpert", "WeldSeamExpert", "make_expert"]
