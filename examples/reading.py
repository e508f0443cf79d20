"""Reading scores by grade: random intercepts and slopes per student.

A classic longitudinal design follows 22 students whose reading was tested in a
few consecutive grades each. We simulate data like that: every student is tested
3 to 5 times between grades 1 and 6, scores rise by about 8 points a grade,
and students differ both in their level and in how fast they improve (better
readers improving a little faster, a positive intercept-slope correlation).

lme4:   fm <- lmer(score ~ grade + (grade | student), d)
"""

# %%
import numpy as np
import pandas as pd

import bayeslmm
from _settings import SAMPLING, save_figure

rng = np.random.default_rng(22)
rows = []
for k in range(22):
    first = int(rng.integers(1, 4))  # first tested in grade 1, 2 or 3
    n_tests = int(rng.integers(3, 6))  # then 3 to 5 tests, one per grade
    rows += [{"student": f"s{k + 1:02d}", "grade": g} for g in range(first, min(first + n_tests, 7))]
tests = pd.DataFrame(rows)
truth = {
    "beta": {"(Intercept)": 20.0, "grade": 8.0},
    "sigma": 3.0,
    "student": {"sd": [5.0, 2.0], "cor": [[1.0, 0.3], [0.3, 1.0]]},
}
data = bayeslmm.simulate("score ~ grade + (grade | student)", tests, truth, seed=22)
print(data.head(8))
print(f"\n{data.student.nunique()} students, {len(data)} scores; tests per student: "
      f"{data.groupby('student').size().value_counts().sort_index().to_dict()}")

# %% [markdown]
# ## The model
#
# $\text{score}_{ij} = (\beta_0 + u_{0j}) + (\beta_1 + u_{1j})\,\text{grade}_{ij} + e_{ij}$:
# each student has an own line. With 3 to 5 scores per student a separate
# regression per student would be noisy; the mixed model borrows strength
# across students.

# %%
fit = bayeslmm.lmer("score ~ grade + (grade | student)", data, random_seed=3, **SAMPLING)
print(fit.summary())
print("\nBayesian R2 (marginal: fixed effects only; conditional: with the student effects):")
print(fit.r2().round(3))

# %% [markdown]
# ## Each student's line
#
# The points are a student's scores, the orange line the student's `coef()`
# line with its 95% band, the dashed line the average student. Students
# with few tests have wide bands.

# %%
fig = fit.plot.trajectories("grade", level=0.95)
save_figure(fig, "reading_trajectories")
print("coef(fm)$student:\n", fit.coef()["student"].round(2), sep="")

# %%
fig = fit.plot.caterpillar()
save_figure(fig, "reading_caterpillar")
fig = fit.plot.shrinkage(x="level")
save_figure(fig, "reading_shrinkage")

# %% [markdown]
# ## Predicted grade-6 scores
#
# For every student, including those not yet tested in grade 6, with a 95%
# prediction interval for a new test (`kind="response"` adds the residual noise).

# %%
grade6 = pd.DataFrame({"student": sorted(data.student.unique()), "grade": 6})
pred = fit.predict(grade6, kind="response", random_seed=4)
print(pd.concat([grade6, pred.round(1)], axis=1).to_string(index=False))
