"""The answers to the notebooks' exercises, for teachers (not shown by :mod:`refsnn.teaching.exercises`).

``solution(ID)`` returns ``(answer, explanation)``: ``answer`` is a value that
``exercises.check_answer(ID, answer)`` accepts, ``explanation`` says why, and where the number comes from.

Two kinds of answers:

* computed live, with the same helpers the check uses (a gradient check, a closed form, a solve on
  the notebook's seeded problem): the value is the truth on this machine;
* measured by training runs or sampling: the value is the recorded measurement, with its settings
  and seeds in the explanation ("measured, see ...").  Nothing here trains; rerun the command
  named in the explanation to reproduce it.

``tests/test_exercises.py`` runs every solution through its check.
"""

from __future__ import annotations

from refsnn.teaching import exercises as _ex

__all__ = ["solution", "SOLUTIONS"]


def _s_00_1():
    truth = {k: all(p for _, p, _ in _ex._gradcheck_results(k, v)) for k, v in _ex._SWITCHES.items()}
    return truth, ("Computed live (gradcheck.run_cases on every case of problems.gradcheck_cases(name, 0) with the "
                   "switch).  STBP reset='zero' passes: the zero reset is another neuron, and its gradient is still "
                   "exact.  IDE solver='code_iter' fails (about 0.52-0.55 relative error): it solves a different "
                   "linear system, (2I - J^T) beta = g.  ST-RSBP recurrent_grad='diagonal' fails: it passes only "
                   "the feed-forward case (index 0), which has no recurrent layer.")


def _s_00_2():
    results = _ex._gradcheck_results("st_rsbp", _ex._SWITCHES["st_rsbp"])
    truth = [i for i, (_, passed, _) in enumerate(results) if passed]
    errs = [e for _, p, e in results if not p]
    names = [results[i][0] for i in truth]
    return truth, (f"Computed live: the passing cases are {truth} ({', '.join(names)}), the ones without a recurrent "
                   f"layer, where M is diagonal and the switch changes nothing; the recurrent cases fail at "
                   f"{min(errs):.2f}-{max(errs):.2f} relative error.")


def _s_01_1():
    return 1.98, ("Measured, see notebooks/01_stbp.ipynb, exercise 1 (its scaffold with the literal (B3) term): "
                  "1.98 % on the notebook's 64-32-10 net (PRESETS['code'], T = 20, 4 digits), on W1; 1.0-2.0 % over "
                  "six seeds of that net; 1.3-1.7 % on 64-32-10 and 64-128-10 nets with 32 digits.  The check "
                  "takes 0.95-2.2 %.  Changing (B4)'s temporal term as well gives 3-6 %.")


def _s_01_2():
    from refsnn import stbp

    truth = {k for k in ("snntorch", "spikingjelly", "norse") if not stbp.PRESETS[k].detach_reset}
    return truth, ("Computed live from stbp.PRESETS (detach_reset=False; the presets are verified against the "
                   "libraries in tests/test_peers.py): spikingjelly and norse keep the reset path; snnTorch's "
                   "default Leaky (reset_delay=True) detaches it.")


def _s_01_3():
    return ({"rect": 0.955, "triangle": 0.945, "sigmoid": 0.933, "gauss": 0.945},
            "Measured, see notebooks/01_stbp.ipynb, exercise 3: the mean over seeds 0, 1, 2 of "
            "train('stbp', 'digits', seed=s, epochs=8, config={'surrogate': name, 'width': 1.0})['test_accuracy']: "
            "rect 0.955, triangle 0.945, sigmoid 0.933, gauss 0.945; seed-to-seed spread up to 1.7 points.  "
            "The check takes each within 0.01.")


def _s_02_1():
    return 0.930, ("Measured, see notebooks/02_st_rsbp.ipynb, exercise 1 (section 7's settings): train('st_rsbp', 'digits', epochs=3, seed=0, "
                   "config={'recurrent_grad': 'diagonal', 'recurrent_delta': 'code', 'lateral_grad': 'code'}) reached "
                   "0.930 (the exact gradient, same settings: 0.947).  The check takes it within 0.01.")


def _s_02_2():
    v = _ex._ratio_max_S()
    return v, (f"Computed live on section 5's 8-6-R6-4 problem: {v:.6g}.  It is <= 0 for every neuron that fired: "
               f"with d = e/o, sum_j w_ij d_ij = a_i/o_i, so S_i = 1 - a_i/(nu o_i), and nu o_i <= a_i.")


def _s_02_3():
    return ({"tau_s": "closer", "rate": "further"},
            "Measured, see notebooks/02_st_rsbp.ipynb, exercise 3 (section 3's problem: the 64-40-R30-10 net, 8 digits): the mean of "
            "nu o / a over the neurons that fired moves 0.951 -> 0.957 (closer) with tau_s 4 -> 8, and "
            "0.951 -> 0.938 (further) with the input rate doubled; T barely matters (0.947-0.951 for T = 50-400).")


def _s_02_4():
    v = _ex._silent_target_grad()
    return v, ("Computed live on section 5's problem: exactly 0 for the silent label neuron (neuron 1, the label of "
               "samples 1 and 2): with e = 0 and d = 0 no weight onto it gets a gradient.")


def _s_03_1():
    t = _ex._strong_feedback()
    return dict(t), (f"Computed live on section 1's net: bound {t['bound']:.3f}; fixed_point converged = "
                     f"{t['fixed_point']} (it diverges and warns), broyden converged = {t['broyden']}.  "
                     f"The check takes the bound within 1 %.")


def _s_03_2():
    c = _ex._code_iter_cosine()
    return {"learns": True, "cosine": c}, (
        f"'learns' measured, see notebooks/03_ide.ipynb, exercise 2: train('ide', 'digits', seed=0, epochs=5, "
        f"config={{'solver': 'code_iter'}}) reached 96.7 %, as the exact gradient does.  'cosine' computed live on "
        f"section 3's problem: {c:.4f} (the check takes it within 0.002).")


def _s_03_3():
    return "b", ("From the module docstring of refsnn.ide ('deviations') and ide.vjp: (b) by default, the chain "
                 "from the last layer's a[T]; (c) only with linearize_at='fixed_point'.")


def _s_03_4():
    return 200, ("Measured, see notebooks/03_ide.ipynb, exercise 4 (section 3's problem): relative difference of the whole "
                 "gradient 4.3 % at T = 50, 1.35 % at 100, 0.72 % at 200 (falling like 1/T); single tensors (the "
                 "gain g) need T = 300.")


def _s_04_1():
    return ({"V2 T=4": 0.930, "V2 T=64": 0.967},
            "Measured, see notebooks/04_ssnn_bp.ipynb, exercise 1: experiments.accuracy_vs_T('digits', Ts=(4, 64), "
            "seeds=(0,), forwards=('rate', 'spike'), epochs=4): V2 0.930 at T = 4 and 0.967 at T = 64 (V1: 0.972 "
            "at both).  The check takes each within 0.01.")


def _s_04_2():
    return ({"independent", "reuse"},
            "Measured, see notebooks/04_ssnn_bp.ipynb, exercise 2 (V2, T = 2, section 5's params, x1, y1; sample_gradients, 3000 estimates of one digit, "
            "gradcheck.check_statistical): both are biased; W1's relative error of the mean is about 0.17-0.18 for "
            "either port and unchanged with 30000 estimates, so bias, not noise.  Repeated with other seeds the "
            "two ports' errors overlap (independent 0.172-0.182, reuse 0.174-0.177), so these draws show no extra "
            "bias from reuse.  In V1 the two ports are the same draws and both unbiased.")


def _s_04_3():
    v = _ex._gamma_ratio()
    return v, (f"Computed live with ssnn_bp.variance_v1 on section 5's small net and first digit: x{v:.3f} "
               f"(the check takes it within 2 %); W2's variance does not change.")


def _s_04_4():
    return ({"unbiased": True, "first_layer_noise": "larger"},
            "Measured, see notebooks/04_ssnn_bp.ipynb, exercise 4 (3000 estimates at T = 16, seeds 1 and 2): "
            "check_statistical passes; W1's RMS error relative to its norm is 1.5-1.6 against "
            "0.54-0.56 with one hidden layer, because Gamma_1 = gamma_1 gamma_2 and gamma_1 ~ 0.48.")


def _s_05_1():
    return ({"discretization": "euler", "reset": "subtract", "reset_timing": "delayed", "input_late": False,
             "spike_late": True},
            "spyx's membrane equals norse's until the crossing (Euler, input on time); in the crossing step it "
            "shows 0.1064, above the threshold, with no spike; the spike appears one step later, in the step "
            "where the membrane drops by exactly the threshold (0.1064 * 0.96 - 0.1 = 0.0021): a reset by "
            "subtraction applied at the next step, and the spike reported with it. The check compares the "
            "membrane before the reset, where the recording's 0.1064 lives.")


SOLUTIONS = {
    "00-1": _s_00_1, "00-2": _s_00_2,
    "01-1": _s_01_1, "01-2": _s_01_2, "01-3": _s_01_3,
    "02-1": _s_02_1, "02-2": _s_02_2, "02-3": _s_02_3, "02-4": _s_02_4,
    "03-1": _s_03_1, "03-2": _s_03_2, "03-3": _s_03_3, "03-4": _s_03_4,
    "04-1": _s_04_1, "04-2": _s_04_2, "04-3": _s_04_3, "04-4": _s_04_4,
    "05-1": _s_05_1,
}


def solution(exercise: str):
    """``(answer, explanation)`` for exercise ``exercise``; ``exercises.check_answer(exercise, answer)`` accepts ``answer``."""
    if exercise not in SOLUTIONS:
        raise ValueError(f"exercise: expected one of {sorted(SOLUTIONS)}, got {exercise!r}")
    return SOLUTIONS[exercise]()
