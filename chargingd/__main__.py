from chargingd.cli import main

raise SystemExit(main())
