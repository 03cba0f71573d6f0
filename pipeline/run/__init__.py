"""The job: options, the driver that plans and schedules shards and videos on Ray, progress and terminal."""
