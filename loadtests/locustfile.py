"""The Locust entry point: `python -m locust -f loadtests/locustfile.py [UserClass ...]`.

User classes (see users.py, flow_users.py): CreateUser, BulkUser, MixedUser, ArrivalUser,
FloodQueueUser, SteadyQueueUser, WorkflowUser. Name the ones to run on the command line; `boundq flood
--scenario ...` does that for you.
"""

from boundq.loadtests.flow_users import FloodQueueUser, SteadyQueueUser
from boundq.loadtests.users import ArrivalUser, BulkUser, CreateUser, MixedUser
from boundq.loadtests.workflow_users import WorkflowUser

__all__ = ["ArrivalUser", "BulkUser", "CreateUser", "FloodQueueUser", "MixedUser",
           "SteadyQueueUser", "WorkflowUser"]
