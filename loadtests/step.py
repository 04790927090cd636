"""Step load: MixedUser, FLOOD_STEP_USERS more users every FLOOD_STEP_SECONDS, up to
FLOOD_USERS, for FLOOD_TIME seconds in all (then the shape stops the test).

    python -m locust -f loadtests/step.py --headless --host http://127.0.0.1:8080
"""

from __future__ import annotations

import os

from locust import LoadTestShape

from boundq.loadtests.users import MixedUser

__all__ = ["MixedUser", "StepLoadShape"]


class StepLoadShape(LoadTestShape):
    max_users = int(os.environ.get("FLOOD_USERS", "50"))
    step_users = int(os.environ.get("FLOOD_STEP_USERS", "0")) or max(1, max_users // 5)
    step_seconds = float(os.environ.get("FLOOD_STEP_SECONDS", "0")) or 5.0
    time_limit = float(os.environ.get("FLOOD_TIME", "30"))

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        if run_time >= self.time_limit:
            return None
        step = int(run_time // self.step_seconds) + 1
        users = min(self.max_users, step * self.step_users)
        return users, float(self.step_users)
