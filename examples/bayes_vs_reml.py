"""Bayesian and REML fits side by side.

The point of comparing them: the fixed effects barely move between Bayes and REML,
while the variance components -- estimated from few groups -- are where they
differ. Dyestuff has only 6 batches: the posterior for the batch sd is wide and
right-skewed, and its mean sits above the REML estimate; the intercept agrees.
"""

import os

import bayeslmm
from _settings import SAMPLING

for name, formula in [("dyestuff", "Yield ~ 1 + (1 | Batch)"), ("sleepstudy", "Reaction ~ Days + (Days | Subject)")]:
    data = bayeslmm.datasets.load(name)
    bayes = bayeslmm.lmer(formula, data, random_seed=3, **SAMPLING)
    reml = bayes.reml()  # the REML fit of the same formula and data
    print(reml.summary())
    cmp = bayeslmm.compare(bayes, reml)
    print(f"\n{name}: {formula}\n{cmp}\n")
    fixed = cmp.table[cmp.table["kind"] == "fixed"]
    varcomp = cmp.table[cmp.table["kind"] != "fixed"]
    shift_fixed = ((fixed[("NUTS", "Estimate")] - fixed[("REML", "Estimate")]).abs() / fixed[("NUTS", "Est.Error")]).max()
    shift_var = ((varcomp[("NUTS", "Estimate")] - varcomp[("REML", "Estimate")]).abs() / varcomp[("NUTS", "Est.Error")]).max()
    print(f"largest Bayes-REML gap in posterior sds: fixed effects {shift_fixed:.2f}, variance components {shift_var:.2f}")
    if "Days" in formula:  # the classic questions, both ways: lmerTest's t test and brms's hypothesis()
        print(reml.fixef())
        print(bayes.hypothesis(["Days > 0", "Days = 0"]))
    fig = cmp.plot()
    if os.environ.get("BAYESLMM_EXAMPLE_OUTPUT"):
        fig.savefig(os.path.join(os.environ["BAYESLMM_EXAMPLE_OUTPUT"], f"bayes_vs_reml_{name}.png"), dpi=100)
