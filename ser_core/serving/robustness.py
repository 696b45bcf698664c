"""How robust the served model is and how far an attack had to go, as the app says it: read from
the bundle and the attack's result, never recomputed.

  model_robustness(config)  the bundle's measured robust accuracy at 40 and 30 dB SNR with n and
                            its interval (config "robustness", written by
                            `python -m export robustness-card`), and its defence, if any
  snr_outcome(result)       the SNR at which an attacked clip flipped, or that it held at the
                            budget: a number and a plain sentence (waveform attacks)"""
from __future__ import annotations

# The budgets the app names, in this order (docs/robustness.md: the L2 balls of 40 and 30 dB SNR).
SHOWN_BUDGETS = ("l2@40dB", "l2@30dB")


def defence_text(config: dict, short: bool = False) -> str | None:
    """A plain phrase naming the bundle's defence (input transform or adversarial training), or
    None; `short`: a few words, for the model picker."""
    d = config.get("defence") or {}
    if d.get("chain"):
        names = "+".join(p.get("name", "?") for p in d["chain"])
        if short:
            return f"input defence {names}"
        return (f"behind the input defence {names} (the weights of {config.get('defended_from', 'its base')}; "
                "its accuracy figures are that model's, without the defence)")
    if d.get("method"):
        where = f"waveform, {d['snr']:g} dB SNR" if d.get("domain") == "waveform" else "log-Mel features"
        if short:
            return f"{d['method'].upper()} ({where})"
        return f"adversarially trained ({d['method']}, {where}) from {d.get('base', 'its base')}"
    return None


def model_robustness(config: dict) -> dict:
    """{"budgets": {budget: {robust, n, accuracy, wilson95}}, "n", "defence", "text"} from the
    bundle's config; text says when nothing was measured."""
    block = config.get("robustness") or {}
    budgets = {k: block["budgets"][k] for k in SHOWN_BUDGETS if k in (block.get("budgets") or {})}
    defence = defence_text(config)
    if not budgets:
        text = "Robust accuracy: not measured for this model."
    else:
        parts = [f"{b['accuracy']:.2f} at {k.split('@')[1].replace('dB', ' dB')} SNR ({b['robust']}/{b['n']} clips, "
                 f"95% CI {b['wilson95'][0]:.2f}-{b['wilson95'][1]:.2f})" for k, b in budgets.items()]
        who = ("adaptive attacks through its defence" if block.get("view") == "adaptive" and block.get("defence")
               else "the worst case of the attack suite")
        text = f"Robust accuracy on held-out speakers under {who}: " + "; ".join(parts) + "."
    if defence:
        text = f"Defended: {defence}. " + text
    return {"budgets": budgets, "n": block.get("n"), "defence": defence, "text": text}


def snr_outcome(result: dict) -> dict:
    """{"flip_snr_db", "snr_outcome"} of an attack's result: the SNR of the verified flip (the
    written WAV against the clean clip; None when it did not flip or the attack is a feature
    attack) and one sentence saying it, or that the clip held at the budget."""
    if result.get("domain") != "waveform" or result.get("snr_db") is None:
        return {"flip_snr_db": None, "snr_outcome": None}
    snr = float(result["snr_db"])
    params = result.get("params") or {}
    budget = (f"{params['snr_db']:g} dB SNR" if params.get("snr_db") is not None else
              f"{params['eps_16bit']:g} 16-bit steps a sample" if params.get("eps_16bit") is not None else None)
    reached = result.get("target_reached") if result.get("target") else result.get("flipped")
    goal = f"landed on {result['target']}" if result.get("target") else "flipped"
    if reached:
        text = f"The clip {goal} at {snr:.1f} dB SNR" + (f" (budget {budget})." if budget else ".")
        return {"flip_snr_db": round(snr, 2), "snr_outcome": text}
    stopped = " until the attack was stopped early" if result.get("stopped_early") else ""
    text = (f"The clip held at the budget: no verified {'landing' if result.get('target') else 'flip'} within "
            f"{budget}{stopped} (the perturbation tried: {snr:.1f} dB SNR)." if budget else
            f"The clip held: no verified flip found{stopped} (the smallest perturbation tried: {snr:.1f} dB SNR).")
    return {"flip_snr_db": None, "snr_outcome": text}
