"""Policies for skillcell cells: scripted experts now; behaviour cloning and RL build on them."""

from skillcell.policies.scripted import PegInsertExpert, ScriptedExpert, WeldSeamExpert, make_expert

__all__ = ["PegInsertExpert", "ScriptedExpert", "WeldSeamExpert", "make_expert"]
