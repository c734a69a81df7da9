from sockhop.cli import main

raise SystemExit(main())
