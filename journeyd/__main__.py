from journeyd.cli import main

raise SystemExit(main())
