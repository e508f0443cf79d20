"""Salaries in 20 organisations: the intercept-only ICC, then random intercepts and slopes.

A textbook multilevel example: employees' salaries (in thousands) in 20
organisations of very different sizes, with years of experience as the
predictor. Only a descriptive table and the fitted results are published, so we
simulate data to match: organisations of 5 to 60 employees, experience of 0 to 15 years, an
intercept-only model whose ICC is about 0.845, and organisation slopes on
experience that correlate negatively with the intercepts (organisations that
pay well from the start give smaller raises).

lme4:   m0 <- lmer(salary ~ 1 + (1 | org), d);  performance::icc(m0)
        m1 <- lmer(salary ~ experience + (experience | org), d)
"""

# %%
import numpy as np
import pandas as pd

import bayeslmm
from _settings import SAMPLING, save_figure

sizes = [5, 6, 8, 9, 11, 12, 14, 16, 18, 20, 23, 25, 28, 31, 35, 39, 44, 49, 55, 60]
rng = np.random.default_rng(11)
org = np.repeat([f"org{k + 1:02d}" for k in range(len(sizes))], sizes)
employees = pd.DataFrame({"org": org, "experience": rng.integers(0, 16, size=org.size)})
truth = {
    "beta": {"(Intercept)": 60.0, "experience": 1.0},  # 60k to start, 1k more per year
    "sigma": 3.0,
    "org": {"sd": [18.0, 0.5], "cor": [[1.0, -0.6], [-0.6, 1.0]]},
}
data = bayeslmm.simulate("salary ~ experience + (experience | org)", employees, truth, seed=11)

# %% [markdown]
# ## The descriptive table
#
# One row per organisation: its size, the mean and sd of salary, and the mean experience.

# %%
table = data.groupby("org").agg(
    n=("salary", "size"),
    salary_mean=("salary", "mean"),
    salary_sd=("salary", "std"),
    experience_mean=("experience", "mean"),
)
print(table.round(1))
print(f"\n{len(data)} employees; overall mean salary {data.salary.mean():.1f}k (sd {data.salary.std():.1f}k)")

# %% [markdown]
# ## Intercept-only model and the ICC
#
# $y_{ij} = \beta_0 + u_{0j} + e_{ij}$. The intraclass correlation
# $\tau_0^2 / (\tau_0^2 + \sigma^2)$ is the share of salary variance that lies
# between organisations; `fit.icc()` gives its posterior.

# %%
m0 = bayeslmm.lmer("salary ~ 1 + (1 | org)", data, random_seed=1, **SAMPLING)
print(m0.summary())
print("\nICC:\n", m0.icc().round(3), sep="")

# %% [markdown]
# ## Random intercepts and slopes on experience
#
# Every organisation gets its own starting salary and its own raise per year.
# The correlation between the two is negative, as simulated.

# %%
m1 = bayeslmm.lmer("salary ~ experience + (experience | org)", data, random_seed=2, **SAMPLING)
print(m1.summary())
vc = m1.VarCorr()
rho = vc[vc.var2.notna()].iloc[0]
print(f"\nintercept-slope correlation: {rho.sdcor:.2f} (95% interval {rho['l-95% CI']:.2f} to {rho['u-95% CI']:.2f}); "
      "simulated -0.6")

# %% [markdown]
# ## Complete, no and partial pooling
#
# Complete pooling ignores the organisations (one regression line for all);
# no pooling fits a separate line per organisation; the mixed model's
# estimates (partial pooling) sit in between. Small organisations are pulled
# furthest towards the overall line: in the shrinkage plot the arrows are longest on the left.

# %%
pool = m1.pooling()
wide = pool.pivot(index="grp", columns="term", values=["no_pooling", "partial_pooling"])
wide.insert(0, ("n", ""), pool.drop_duplicates("grp").set_index("grp")["n"])
print(wide.round(2))
print(f"\ncomplete pooling: intercept {pool.complete_pooling.iloc[0]:.2f}, "
      f"slope {pool.loc[pool.term == 'experience', 'complete_pooling'].iloc[0]:.2f}")

# %%
fig = m1.plot.shrinkage(x="size")
save_figure(fig, "salary_shrinkage")
fig = m1.plot.trajectories("experience", ncols=5)
save_figure(fig, "salary_trajectories")

# %% [markdown]
# ## Which model predicts better?
#
# Leave-one-out cross-validation (the Bayesian counterpart of comparing AIC) prefers the model
# with slopes. Where PSIS-LOO's importance weights fail for an observation (Pareto k > 0.7),
# `loo()` refits the model without it and uses the exact value, as brms's `reloo` does.

# %%
loo = bayeslmm.compare_models({"intercepts": m0, "intercepts and slopes": m1})
print(loo[["rank", "elpd", "elpd_diff", "dse", "weight"]].round(1))
