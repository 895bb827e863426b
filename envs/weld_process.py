"""Arc process models: heat input, bead geometry and defect indicators from the torch's motion.

Pure functions and small configs; `skillcell.envs.weld.WeldMetrics` evaluates them once per
millimetre of seam welded (when a seam sample is first welded), the WPS YAML holds every input.

**Heat input** (EN 1011-1:2009 sec. 19, ISO/TR 17671-1; the arc energy times the thermal
efficiency factor ``k``, 0.8 for MIG/MAG)::

    Q = eta * U * I / v            [kJ/mm]  (U in V, I in A, v in mm/s, then / 1000)

Over a millimetre that the torch crossed at varying speed (or dwelt on), ``Q`` is the arc energy
delivered while it did, over the seam length it welded: the same formula for steady travel.

**Deposit** (mass conservation: the wire fed becomes weld metal, less spatter)::

    A_d = eta_dep * (pi d_w^2 / 4) * WFS * t_arc / L        [mm^2]   (= eta_dep A_w WFS / v)

The deposition-rate form ``m = rho A_w WFS eta_dep`` is the textbook one (e.g. 13.1 d^2 WFS eta
lb/h for steel with d in inches, WFS in in/min: Welding Design & Fabrication, "Pre-calculating
wire-feed speed, travel speed and voltage", Nov. 2009); `tests/test_weld_process.py` reproduces
its worked examples.

**Fusion zone** (Rosenthal's quasi-steady point source on a semi-infinite body, "thick plate";
Rosenthal, Trans. ASME 68 (1946) 849; as in Grong, *Metallurgical Modelling of Welding*, 1997,
ch. 1)::

    T - T0 = q / (2 pi k R) * exp(-v (R + xi) / (2 a))

with ``q = eta U I`` the net arc power, ``xi`` the distance ahead of the source along the travel,
``R`` the distance from it, ``k`` the conductivity and ``a`` the diffusivity. In the units
``R* = v R / 2a``, ``xi* = v xi / 2a`` the melting isotherm ``T = T_m`` is ``R* exp(R* + xi*) = n``
with the operating parameter ``n = q v / (4 pi k a (T_m - T0))`` (Christensen et al., Brit. Weld.
J. 12 (1965) 54). Its widest point (where ``d(R*^2 - xi*^2) = 0`` along the isotherm) lies at
``xi* = -rho^2 / (rho + 1)``, ``R* = rho``, with::

    n = rho * exp(rho / (rho + 1)),      y*_max = rho * sqrt(2 rho + 1) / (rho + 1)

solved for ``rho`` by Newton's method on ``ln rho`` (two steps from ``ln n - 1/2``, the derivative
lying in [1, 1.25], leave a relative error below 1e-6 for any ``n``). The fusion boundary of a
point source is a half circle in the cross-section, so the fused half-width is also the
penetration: ``r_f = y*_max 2a / v``. Its
limits are the classic ones: the static hemisphere ``r_f = q / (2 pi k dT)`` for ``v -> 0`` and the
thick-plate peak-temperature law ``r_f^2 = 2 (q/v) / (pi e rho c dT)`` for large ``n``. The
point source melts more than a real arc (no latent heat, no spread of the arc), so ``r_f`` is an
upper estimate.

**Bead** from ``A_d`` and ``r_f``: a fillet (or the fillet of a lap joint) is an equal-leg,
flat-faced fillet of area ``A_d = z^2 / 2``: leg ``z``, face width ``sqrt(2) z``, throat
``z / sqrt(2)`` (reported as its reinforcement); a butt (bead-on-plate) bead is as wide as the
fusion zone at the surface, ``w = 2 r_f``, its cap a parabolic segment of area ``A_d = (2/3) w h``
(reinforcement ``h``). The penetration is ``r_f`` below the aim point (the root).

**Validity range** (``bead_model`` in the WPS): current, voltage and travel speed within the
ranges it states; the fusion zone within the plate (``r_f <= t``: beyond it the melt reaches the
back face and the thick-plate solution no longer holds). Outside, every input is clamped to its
range, the penetration to the plate thickness, and the millimetre is flagged out of range; nothing
is extrapolated silently.

**Defect indicators** per millimetre, each with thresholds and a one-line cause in the WPS's
``defects`` section: porosity (CTWD too long or a drag angle), undercut (travel speed or current
too high, work angle off), lack of fusion / cold lap (heat input too low, aim off the root),
burn-through (the fusion zone through most of the plate: heat input too high for its thickness),
insufficient leg (the model's fillet leg below the design leg; fillet and lap joints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from skillcell.config import ConfigError, bounds

__all__ = [
    "DEFECT_NAMES",
    "ArcConfig",
    "BeadModel",
    "BeadModelConfig",
    "BurnThroughLimits",
    "DefectLimitsConfig",
    "LackOfFusionLimits",
    "LegLimits",
    "PorosityLimits",
    "UndercutLimits",
    "deposit_area_mm2",
    "fillet_leg_mm",
    "fusion_radius_mm",
    "heat_input_kj_mm",
]

#: the defect indicators, in the order `DefectLimitsConfig.check` returns them
DEFECT_NAMES = ("porosity", "undercut", "lack_of_fusion", "burn_through", "insufficient_leg")
#: joints whose weld is a fillet (a leg size); a butt joint's is a bead on the plates
FILLET_JOINTS = ("fillet", "lap")
_SQRT2 = math.sqrt(2.0)


def heat_input_kj_mm(current_a: float, voltage_v: float, arc_efficiency: float, travel_speed_mm_s: float) -> float:
    """``Q = eta U I / v`` in kJ/mm (EN 1011-1)."""
    return arc_efficiency * voltage_v * current_a / travel_speed_mm_s * 1e-3


def deposit_area_mm2(wire_diameter_mm: float, wire_feed_mm_s: float, travel_speed_mm_s: float,
                     deposition_efficiency: float) -> float:
    """Weld metal cross-section ``eta_dep (pi d^2 / 4) WFS / v`` (mm^2): the wire fed per mm of seam."""
    return deposition_efficiency * 0.25 * math.pi * wire_diameter_mm**2 * wire_feed_mm_s / travel_speed_mm_s


def fillet_leg_mm(area_mm2: float) -> float:
    """Leg ``z`` of an equal-leg flat-faced fillet of cross-section ``z^2 / 2``."""
    return math.sqrt(2.0 * area_mm2)


def fusion_radius_mm(net_power_w: float, travel_speed_mm_s: float, conductivity_w_mm_k: float,
                     diffusivity_mm2_s: float, delta_t_k: float) -> float:
    """Half-width (= depth) of Rosenthal's thick-plate melting isotherm (mm); see the module docstring."""
    a = diffusivity_mm2_s
    n = net_power_w * travel_speed_mm_s / (4.0 * math.pi * conductivity_w_mm_k * a * delta_t_k)
    log_n = math.log(n)
    u = log_n - 0.5
    for _ in range(2):  # Newton on ln(rho): u + sigmoid(u) = ln n
        e = math.exp(u)
        sig = e / (1.0 + e)
        u -= (u + sig - log_n) / (1.0 + sig * (1.0 - sig))
    rho = math.exp(u)
    return rho * math.sqrt(2.0 * rho + 1.0) / (rho + 1.0) * 2.0 * a / travel_speed_mm_s


def _check_range(key: str, band: tuple[float, float]) -> None:
    if band[0] >= band[1]:
        raise ConfigError(f"{key}: the range [low, high] needs low < high, got [{band[0]}, {band[1]}]")


@dataclass(frozen=True)
class ArcConfig:
    """The WPS's arc: electrics, wire and efficiencies (a capture's ``current_a``/``voltage_v`` columns
    replace the electrics step by step)."""

    current_a: float = field(metadata=bounds(5.0, 1000.0))
    voltage_v: float = field(metadata=bounds(5.0, 60.0))
    #: thermal efficiency factor k (EN 1011-1 / ISO/TR 17671-1: 0.8 for MIG/MAG)
    arc_efficiency: float = field(metadata=bounds(0.1, 1.0))
    wire_diameter_mm: float = field(metadata=bounds(0.3, 6.0))
    wire_feed_m_min: float = field(metadata=bounds(0.1, 40.0))
    #: weld metal over wire melted (spatter loss)
    deposition_efficiency: float = field(metadata=bounds(0.3, 1.0))


@dataclass(frozen=True)
class BeadModelConfig:
    """The base metal's thermal constants and the range over which the bead model is used."""

    conductivity_w_mm_k: float = field(metadata=bounds(1e-4, 1.0))
    diffusivity_mm2_s: float = field(metadata=bounds(0.1, 200.0))
    melting_point_c: float = field(metadata=bounds(100.0, 4000.0))
    preheat_c: float = field(metadata=bounds(-50.0, 1000.0))
    current_a: tuple[float, float] = field(metadata=bounds(1.0, 1000.0))
    voltage_v: tuple[float, float] = field(metadata=bounds(1.0, 60.0))
    travel_speed_mm_s: tuple[float, float] = field(metadata=bounds(0.01, 500.0))

    def __post_init__(self) -> None:
        for key in ("current_a", "voltage_v", "travel_speed_mm_s"):
            _check_range(key, getattr(self, key))
        if self.melting_point_c <= self.preheat_c:
            raise ConfigError(f"melting_point_c: must be above preheat_c ({self.preheat_c}), got "
                              f"{self.melting_point_c}")


@dataclass(frozen=True)
class PorosityLimits:
    ctwd_max_mm: float = field(metadata=bounds(1.0, 50.0))
    travel_angle_min_deg: float = field(metadata=bounds(-60.0, 60.0))
    cause: str = ""


@dataclass(frozen=True)
class UndercutLimits:
    travel_speed_max_mm_s: float = field(metadata=bounds(0.1, 500.0))
    current_max_a: float = field(metadata=bounds(5.0, 1000.0))
    work_angle_error_max_deg: float = field(metadata=bounds(0.1, 90.0))
    cause: str = ""


@dataclass(frozen=True)
class LackOfFusionLimits:
    heat_input_min_kj_mm: float = field(metadata=bounds(0.0, 10.0))
    aim_offset_max_mm: float = field(metadata=bounds(0.0, 50.0))
    cause: str = ""


@dataclass(frozen=True)
class BurnThroughLimits:
    #: the fusion zone's depth over the plate thickness where the pool melts through
    penetration_max_fraction: float = field(metadata=bounds(0.05, 2.0))
    cause: str = ""


@dataclass(frozen=True)
class LegLimits:
    leg_min_mm: float = field(metadata=bounds(0.1, 50.0))
    cause: str = ""


@dataclass(frozen=True)
class DefectLimitsConfig:
    """Thresholds of the defect indicators (`DEFECT_NAMES`), each with its one-line cause."""

    porosity: PorosityLimits
    undercut: UndercutLimits
    lack_of_fusion: LackOfFusionLimits
    burn_through: BurnThroughLimits
    #: fillet and lap joints only: a butt WPS has none
    insufficient_leg: LegLimits | None = None

    def __post_init__(self) -> None:
        for name in DEFECT_NAMES:
            limits = getattr(self, name)
            if limits is not None and not limits.cause.strip():
                raise ConfigError(f"{name}.cause: say in one line what causes it")

    def cause(self, name: str) -> str:
        limits = getattr(self, name)
        return limits.cause if limits is not None else ""


class BeadModel:
    """The bead and its defect flags for one millimetre of seam, from what the arc did over it.

    Built once per env from the WPS and the joint; a prescribed weave (``weave_width_mm`` toe to toe)
    carries the arc half its width off the root by design, which the aim limit allows. `evaluate`
    runs when a seam sample is first welded (about every 2.5 control steps at 8 mm/s), so it costs
    a few float operations, not arrays.
    """

    def __init__(self, arc: ArcConfig, model: BeadModelConfig, defects: DefectLimitsConfig, joint_type: str,
                 plate_thickness_mm: float, work_angle_nominal_deg: float, weave_width_mm: float = 0.0):
        if joint_type in FILLET_JOINTS and defects.insufficient_leg is None:
            raise ConfigError(f"defects.insufficient_leg: a {joint_type} joint's WPS needs a leg_min_mm")
        self.arc, self.model, self.defects = arc, model, defects
        self.fillet = joint_type in FILLET_JOINTS
        self.thickness = plate_thickness_mm
        self.work_nominal = work_angle_nominal_deg
        #: wire volume fed per second of arc that becomes weld metal (mm^3/s)
        self.deposit_rate = deposit_area_mm2(arc.wire_diameter_mm, arc.wire_feed_m_min * 1e3 / 60.0, 1.0,
                                             arc.deposition_efficiency)
        # `evaluate` runs in the control loop: its constants as one flat tuple
        d, leg = defects, defects.insufficient_leg
        self._constants = (
            *model.travel_speed_mm_s, *model.current_a, *model.voltage_v, model.conductivity_w_mm_k,
            model.diffusivity_mm2_s, model.melting_point_c - model.preheat_c, plate_thickness_mm, self.deposit_rate,
            self.fillet, d.porosity.ctwd_max_mm, d.porosity.travel_angle_min_deg, d.undercut.travel_speed_max_mm_s,
            d.undercut.current_max_a, d.undercut.work_angle_error_max_deg, work_angle_nominal_deg,
            d.lack_of_fusion.heat_input_min_kj_mm, d.lack_of_fusion.aim_offset_max_mm + 0.5 * weave_width_mm,
            d.burn_through.penetration_max_fraction * plate_thickness_mm, leg.leg_min_mm if leg else 0.0)

    def evaluate(self, energy_j: float, arc_time_s: float, length_mm: float, current_a: float, voltage_v: float,
                 ctwd_mm: float, travel_angle_deg: float, work_angle_deg: float, aim_offset_mm: float) -> tuple:
        """``(heat_input_kj_mm, width, reinforcement, penetration, leg, in_range, *defect flags)`` (mm) of a
        stretch ``length_mm`` long welded in ``arc_time_s`` with ``energy_j`` of net arc energy, the
        torch's technique as given (flags in `DEFECT_NAMES` order)."""
        (speed_lo, speed_hi, current_lo, current_hi, voltage_lo, voltage_hi, k, a, delta_t, thickness, deposit_rate,
         fillet, ctwd_max, travel_min, undercut_speed, undercut_current, work_error_max, work_nominal, heat_min,
         aim_max, burn_through_radius, leg_min) = self._constants
        speed = length_mm / arc_time_s
        in_range = True
        # The model's inputs, clamped to its validity range (and flagged) where outside.
        if not speed_lo <= speed <= speed_hi:
            speed, in_range = (speed_lo if speed < speed_lo else speed_hi), False
        power = energy_j / arc_time_s  # the mean net arc power over the stretch (W)
        if not (current_lo <= current_a <= current_hi and voltage_lo <= voltage_v <= voltage_hi):
            # the power of the electrics clamped to the range (a capture's current may drop to zero)
            current = current_lo if current_a < current_lo else current_hi if current_a > current_hi else current_a
            voltage = voltage_lo if voltage_v < voltage_lo else voltage_hi if voltage_v > voltage_hi else voltage_v
            power, in_range = self.arc.arc_efficiency * voltage * current, False
        heat = energy_j / length_mm * 1e-3
        radius = fusion_radius_mm(power, speed, k, a, delta_t)
        penetration = radius
        if radius > thickness:
            penetration, in_range = thickness, False
        area = deposit_rate / speed
        if fillet:
            leg = math.sqrt(2.0 * area)
            width, reinforcement = _SQRT2 * leg, leg / _SQRT2
        else:
            leg = 0.0
            width = 2.0 * penetration
            reinforcement = 1.5 * area / width
        return (heat, width, reinforcement, penetration, leg, in_range,
                ctwd_mm > ctwd_max or travel_angle_deg < travel_min,
                speed > undercut_speed or current_a > undercut_current
                or abs(work_angle_deg - work_nominal) > work_error_max,
                heat < heat_min or aim_offset_mm > aim_max,
                radius >= burn_through_radius,
                fillet and leg < leg_min)
