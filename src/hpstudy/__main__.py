from hpstudy.cli import main

raise SystemExit(main())
