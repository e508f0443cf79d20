"""Sleepstudy, Model 7: random intercepts and slopes per subject.

lme4:   fm <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
Here:   the same formula, fitted by NUTS, with the lme4 tables plus posterior uncertainty.
"""

import bayeslmm
from _settings import SAMPLING

data = bayeslmm.datasets.load("sleepstudy")
fit = bayeslmm.lmer("Reaction ~ Days + (Days | Subject)", data, random_seed=1, **SAMPLING)

print(fit.summary())
print("\nPriors used:\n", fit.priors, sep="")
print("\nfixef(fm):\n", fit.fixef(), sep="")
print("\nVarCorr(fm):\n", fit.VarCorr(), sep="")
print("\nranef(fm)$Subject (posterior means):\n", fit.ranef()["Subject"].round(2), sep="")
print("\ncoef(fm)$Subject (fixed + random, per draw):\n", fit.coef()["Subject"].round(2), sep="")
