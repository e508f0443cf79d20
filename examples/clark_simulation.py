"""Clark's simulation: 50 clusters of 5, random intercepts with tau = 0.5 and sigma = 1.

The seed notes simulate y = 3 + 0.75 x + u_clus + e with u ~ N(0, 0.5^2), e ~ N(0, 1)
and show lme4 recovering tau ~ 0.52 and sigma ~ 1.00. We simulate the same design
and check that the posterior recovers both.
"""

import numpy as np
import pandas as pd

import bayeslmm
from _settings import SAMPLING

rng = np.random.default_rng(1234)
n_clus, n_per = 50, 5
clus = np.repeat(np.arange(1, n_clus + 1), n_per)
x = rng.normal(size=clus.size)
u = rng.normal(0, 0.5, n_clus)
y = 3 + 0.75 * x + u[clus - 1] + rng.normal(0, 1, clus.size)
data = pd.DataFrame({"y": y, "x": x, "clus": clus})

fit = bayeslmm.lmer("y ~ x + (1 | clus)", data, random_seed=2, **SAMPLING)
print(fit.summary())

vc = fit.VarCorr()
tau = vc.loc[vc.grp == "clus", "sdcor"].item()
sigma = vc.loc[vc.grp == "Residual", "sdcor"].item()
print(f"\nTrue tau = 0.5, posterior mean {tau:.3f}; true sigma = 1, posterior mean {sigma:.3f}")
