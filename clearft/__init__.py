"""``clearft``: the Python client and command line of the CleaR fine-tuning service.

    from clearft import Client

    client = Client("http://127.0.0.1:8000")            # key: CLEARFT_API_KEY, or Client(url, key)
    dataset = client.datasets.upload("train.csv", text_column="text", label_column="label")
    job = client.jobs.create(dataset.id, method="lora", training={"epochs": 3}).wait(progress=True)
    report = job.noise_report()                           # a DataFrame: flagged rows first, then by label_quality
    job.download_adapter("adapter/")

It talks HTTP only (httpx); it imports neither the service nor torch.
"""

from clearft.client import Client
from clearft.errors import ApiError, ClearFTError, JobFailed, UsageError, WaitTimeout
from clearft.models import Dataset, Event, Job, StreamEvent

__all__ = ["ApiError", "ClearFTError", "Client", "Dataset", "Event", "Job", "JobFailed", "StreamEvent",
           "UsageError", "WaitTimeout"]
