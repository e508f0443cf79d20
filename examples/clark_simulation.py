"""Clark's simulation: 50 clusters of 5, random intercepts with tau = 0.5 and sigma = 1.

Clark's tutorial on mixed models simulates y = 3 + 0.75 x + u_clus + e with
u ~ N(0, 0.5^2), e ~ N(0, 1) and shows lme4 recovering tau ~ 0.52 and sigma ~ 1.00. We simulate the same design
with ``bayeslmm.simulate`` (which keeps the true cluster effects), fit it, and check
that the posterior recovers the parameters and the cluster effects.

lme4:   sim <- simulate(~ x + (1 | clus), newdata = d, newparams = list(beta = c(3, .75), theta = .5, sigma = 1))
        fm  <- lmer(y ~ x + (1 | clus), d)
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import bayeslmm
from _settings import SAMPLING, save_figure

rng = np.random.default_rng(1234)
n_clus, n_per = 50, 5
design = pd.DataFrame({"clus": np.repeat(np.arange(1, n_clus + 1), n_per), "x": rng.normal(size=n_clus * n_per)})
truth = {"beta": {"(Intercept)": 3.0, "x": 0.75}, "sigma": 1.0, "clus": 0.5}
data, effects = bayeslmm.simulate("y ~ x + (1 | clus)", design, truth, seed=1234, return_effects=True)
print(data.head())

# %%
fit = bayeslmm.lmer("y ~ x + (1 | clus)", data, random_seed=2, **SAMPLING)
print(fit.summary())

# %% [markdown]
# ## Does the posterior recover the truth?
#
# Each true value should usually fall inside its 95% interval. The data can only
# speak about the cluster effects that were drawn: their sd (printed below) is
# what the posterior of tau should be compared with.

# %%
fx = fit.fixef()
vc = fit.VarCorr().set_index("grp")
recovered = pd.DataFrame(
    {
        "truth": [3.0, 0.75, 0.5, 1.0],
        "posterior mean": [*fx["Estimate"], vc.loc["clus", "sdcor"], vc.loc["Residual", "sdcor"]],
        "l-95% CI": [*fx["l-95% CI"], vc.loc["clus", "l-95% CI"], vc.loc["Residual", "l-95% CI"]],
        "u-95% CI": [*fx["u-95% CI"], vc.loc["clus", "u-95% CI"], vc.loc["Residual", "u-95% CI"]],
    },
    index=["(Intercept)", "x", "tau (clus sd)", "sigma"],
)
recovered["covered"] = (recovered["l-95% CI"] <= recovered["truth"]) & (recovered["truth"] <= recovered["u-95% CI"])
print(recovered.round(3))
realised = effects["clus"]["(Intercept)"].std()
print(f"\nTrue tau = 0.5 (the 50 simulated effects have sd {realised:.3f}), posterior mean "
      f"{vc.loc['clus', 'sdcor']:.3f}; true sigma = 1, posterior mean {vc.loc['Residual', 'sdcor']:.3f}")

# %% [markdown]
# ## The cluster effects
#
# The posterior means of the 50 cluster effects against the simulated ones:
# they are shrunk towards 0 (the fitted slope is below 1), the more so because
# each cluster has only 5 observations.

# %%
re = fit.ranef(long=True)
true_u = effects["clus"].loc[re["grp"], "(Intercept)"].to_numpy()  # both are labelled by the cluster
coverage = np.mean((re["l-95% CI"] <= true_u) & (true_u <= re["u-95% CI"]))
slope = np.polyfit(true_u, re["condval"], 1)[0]
print(f"cluster effects: correlation with the truth {np.corrcoef(true_u, re['condval'])[0, 1]:.2f}, "
      f"shrinkage slope {slope:.2f}, 95% interval coverage {coverage:.0%}")

fig, ax = plt.subplots(figsize=(4.5, 4))
ax.errorbar(true_u, re["condval"], yerr=[re["condval"] - re["l-95% CI"], re["u-95% CI"] - re["condval"]],
            fmt="o", markersize=3, alpha=0.7)
lim = [min(true_u.min(), re["l-95% CI"].min()), max(true_u.max(), re["u-95% CI"].max())]
ax.plot(lim, lim, "k--", linewidth=1)
ax.set_xlabel("simulated cluster effect")
ax.set_ylabel("posterior mean and 95% interval")
save_figure(fig, "clark_effects")

# %%
fig = fit.plot.caterpillar()
save_figure(fig, "clark_caterpillar")
fig = fit.plot.qq()
save_figure(fig, "clark_qq")
