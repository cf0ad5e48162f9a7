"""What makes a function run besides an HTTP route: timers, message queues, platform events."""
