-- AlterTable
ALTER TABLE "JlensShare" ADD COLUMN     "steerAblate" BOOLEAN;
