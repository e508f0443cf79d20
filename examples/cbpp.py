"""cbpp: a binomial GLMM, herd-level variation in the incidence of a cattle disease.

New cases of contagious bovine pleuropneumonia (``incidence``) out of the herd's
``size``, in 15 herds over 4 periods (Lesnoff et al. 2004; lme4's data set).

lme4:   gm1 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
Here:   the same formula and family, fitted by the Laplace approximation (lme4's numbers)
        and by NUTS (the posterior, started from the Laplace fit).

Runs as a script (``python cbpp.py``). Set ``BAYESLMM_EXAMPLE_OUTPUT=<dir>`` to save the figure.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import bayeslmm
from _settings import SAMPLING, save_figure

cbpp = bayeslmm.datasets.load("cbpp")
print(cbpp.head())

# %% [markdown]
# ## Maximum likelihood, as lme4's glmer
#
# Herd h in period t has `size` animals, of which `incidence` fall ill, each with probability
# $p_{ht}$: $\text{logit}(p_{ht}) = \beta_{t} + u_h$, $u_h \sim N(0, \tau^2)$.

# %%
formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
gm1 = bayeslmm.glmer(formula, cbpp, family="binomial", method="Laplace")
print(gm1.summary())

# %% [markdown]
# The same model written with a proportion and the trials as weights (lme4), or with
# Bambi's `p(successes, trials)`, is the same fit.

# %%
gm1_prop = bayeslmm.glmer("incidence / size ~ period + (1 | herd)", cbpp, method="Laplace", weights="size")
print("logLik, cbind form:", round(gm1.logLik(), 4), " proportion + weights:", round(gm1_prop.logLik(), 4))

# %% [markdown]
# ## The posterior by NUTS
#
# Link-scale default priors (see docs/priors.md): Normal(logit(mean incidence), 2.5) on the
# intercept at the mean of the predictors, Normal(0, 2.5 / sd(x)) on the slopes, HalfCauchy(1) on τ.

# %%
fit = bayeslmm.glmer(formula, cbpp, family="binomial", random_seed=1, **SAMPLING)
print(fit.summary())
print(bayeslmm.compare(fit, fit.laplace))

# %% [markdown]
# Probabilities per herd and period (posterior mean and 95% interval), the latent-scale ICC
# (τ² / (τ² + π²/3)) and the Bayesian R² of a GLM.

# %%
pred = fit.predict()
print(pred.head())
print(fit.icc())
print(fit.r2())

# %%
fig, ax = plt.subplots(figsize=(6, 4))
observed = cbpp["incidence"] / cbpp["size"]
ax.errorbar(observed, pred["Estimate"], yerr=[pred["Estimate"] - pred["l-95% CI"], pred["u-95% CI"] - pred["Estimate"]],
            fmt="o", alpha=0.6)
ax.plot([0, 1], [0, 1], color="grey", lw=1)
ax.set(xlabel="observed proportion", ylabel="fitted probability", xlim=(-0.02, max(0.65, float(np.max(observed)) + 0.05)))
save_figure(fig, "cbpp_fitted")
