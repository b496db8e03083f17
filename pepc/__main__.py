from pepc.cli import main

raise SystemExit(main())
