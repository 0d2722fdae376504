# Entry point on the board (and on the unix port, run from the device root folder).
from firmware import app

app.main()
