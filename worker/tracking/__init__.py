"""Following a message to its final status: polls, pushes (DLR), reports, callback URLs,
and the status callbacks to the application."""
