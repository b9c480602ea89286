from chargingd.app.cli import main

raise SystemExit(main())
