"""Sleepstudy: correlated random intercepts and slopes per subject.

Reaction times of 18 subjects over 10 days of sleep deprivation (Belenky et al., 2003).

lme4:   fm <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
Here:   the same formula, fitted by NUTS, with the lme4 tables plus posterior uncertainty.

Runs as a script (``python sleepstudy.py``) or as the notebook ``sleepstudy.ipynb`` built from it.
Set ``BAYESLMM_EXAMPLE_OUTPUT=<dir>`` to save the figures.
"""

# %%
import pandas as pd

import bayeslmm
from _settings import SAMPLING, save_figure

data = bayeslmm.datasets.load("sleepstudy")
print(data.head())
print(f"{data.Subject.nunique()} subjects x {data.Days.nunique()} days = {len(data)} rows")

# %% [markdown]
# ## The model
#
# Every subject gets an intercept and a slope, drawn from a bivariate normal
# with standard deviations $\tau_0, \tau_1$ and correlation $\rho$ (lme4's `(Days | Subject)`):
#
# $$y_{ij} = (\beta_0 + u_{0j}) + (\beta_1 + u_{1j})\,\text{Days}_{ij} + e_{ij},\quad
# (u_{0j}, u_{1j}) \sim \text{MVN}(0, T),\quad e_{ij} \sim N(0, \sigma^2).$$
#
# The priors are weakly informative and scaled from the data; the summary lists them
# (`fit.priors` holds the table).

# %%
fit = bayeslmm.lmer("Reaction ~ Days + (Days | Subject)", data, random_seed=1, **SAMPLING)
fit  # noqa: B018 - in a notebook the fit shows as lme4's short print, in HTML tables

# %% [markdown]
# The full summary: lme4's tables with posterior columns, the priors, and the sampler's diagnostics.

# %%
summary = fit.summary()
summary  # noqa: B018 - shown as HTML tables in a notebook

# %%
print(summary)

# %% [markdown]
# ## The lme4 tables, with posterior uncertainty
#
# `Estimate` is the posterior mean, `Est.Error` the posterior sd, the interval is
# equal-tailed. `coef()` adds fixed and group effects draw by draw.

# %%
print("fixef(fm):\n", fit.fixef(), sep="")
print("\nVarCorr(fm):\n", fit.VarCorr(), sep="")
print("\nranef(fm)$Subject (posterior means):\n", fit.ranef()["Subject"].round(2), sep="")
print("\ncoef(fm)$Subject:\n", fit.coef()["Subject"].round(2), sep="")

# %% [markdown]
# ## Subject trajectories
#
# Each subject's reaction times with the subject's line from `coef()` (orange,
# with its 95% posterior band) and the population line from `fixef()` (dashed).
# Subjects 309 and 335 barely slow down; 308 and 337 slow down fast.

# %%
fig = fit.plot.trajectories("Days", level=0.95)
save_figure(fig, "sleepstudy_trajectories")

# %% [markdown]
# ## Group effects and shrinkage
#
# The caterpillar plot is lme4's `dotplot(ranef(fm, condVar = TRUE))`, with
# posterior intervals. The shrinkage plot puts each subject's own least-squares
# line (no pooling) next to the model's estimate (partial pooling): extreme
# subjects are pulled towards the population line (complete pooling).

# %%
fig = fit.plot.caterpillar(sort="first")
save_figure(fig, "sleepstudy_caterpillar")

# %%
pooling = fit.pooling()
print(pooling.pivot(index="grp", columns="term", values=["no_pooling", "partial_pooling"]).round(2))
fig = fit.plot.shrinkage()
save_figure(fig, "sleepstudy_shrinkage")

# %% [markdown]
# ## Model checks
#
# Residuals against fitted values, QQ plots of the residuals and of both group
# effects, and a posterior predictive check: densities of data sets replicated
# from the posterior over the density of the observed reaction times.

# %%
ax = fit.plot.residuals()
save_figure(ax.figure, "sleepstudy_residuals")
fig = fit.plot.qq()
save_figure(fig, "sleepstudy_qq")
fig = fit.plot.ppc(random_seed=2)
save_figure(fig, "sleepstudy_ppc")

# %% [markdown]
# ## Did the sampler work?
#
# Traces of every chain should overlap, rank plots should be flat, and the
# summary's footer reports divergences, R-hat and ESS.

# %%
fig = fit.plot.trace()
save_figure(fig, "sleepstudy_trace")
fig = fit.plot.rank()
save_figure(fig, "sleepstudy_rank")

# %% [markdown]
# ## Predictions
#
# For a subject in the study (`re.form = NULL`) and for a new subject, at the
# population level (`re.form = NA`), on day 10 -- one day past the data.

# %%
new = pd.DataFrame({"Subject": [308, 309], "Days": [10, 10]})
print("Subjects 308 and 309 on day 10:\n", fit.predict(new), sep="")
print("\nA typical subject on day 10 (re_form='~0'):\n", fit.predict(new.iloc[:1], re_form="~0"), sep="")
